// The REST resources generic clients and warehouse loaders call, through jsforce (logged in with
// the OAuth 2.0 username-password flow, as scenario.mjs), against `forcebridge sim --tls-ca`.
// `node rest_resources.mjs GROUP` runs one group of steps, each on its own: a failing step prints
// {"step", "error", "errorCode"} and the next one runs, so tests/interop.rs names every resource
// that fails. Settings from the environment, as scenario.mjs.
//   served: describe global, SOQL (COUNT(), datetime literals, ORDER BY, LIMIT, OFFSET),
//           queryAll with deleted rows, the replication API (updated, deleted), a Platform Event
//           published over REST and read by pozil's Pub/Sub client, jsforce's SOAP login().
//   added:  identity (jsforce identity(), the resource list), sObject basic information,
//           SOQL LIKE and OR, composite/tree, composite/batch.

import jsforce from 'jsforce';

import { connected } from './managed_lib.mjs';

const env = (name) => {
    const value = process.env[name];
    if (!value) throw new Error(`missing ${name}`);
    return value;
};
const out = (step, fields) => console.log(JSON.stringify({ step, ...fields }));

async function step(name, run) {
    try {
        out(name, await run());
    } catch (error) {
        out(name, { error: String(error?.message ?? error), errorCode: error?.errorCode ?? error?.name ?? null });
    }
}

const conn = new jsforce.Connection({
    oauth2: { loginUrl: env('SF_LOGIN_URL'), clientId: env('SF_CLIENT_ID'), clientSecret: env('SF_CLIENT_SECRET') },
    version: '62.0',
});
const user = await conn.login(env('SF_USERNAME'), env('SF_PASSWORD'));
out('login', { organizationId: user.organizationId, userId: user.id });
const names = (records) => records.map((r) => r.Name);

async function served() {
    await step('describe_global', async () => {
        const global = await conn.describeGlobal();
        const account = global.sobjects.find((s) => s.name === 'Account');
        return {
            names: global.sobjects.map((s) => s.name).sort(),
            account: { queryable: account.queryable, describe: account.urls.describe, sobject: account.urls.sobject },
        };
    });

    // Three Accounts of ours: the SOQL steps read them among the seeded ones by name.
    const mine = await conn.sobject('Account').create([
        { Name: 'Zeta Interop', NumberOfEmployees: 30 },
        { Name: 'Zeta Interop B', NumberOfEmployees: 20 },
        { Name: 'Zeta Interop C', NumberOfEmployees: 10 },
    ]);
    await step('soql', async () => {
        const hourAgo = new Date(Date.now() - 3600e3).toISOString().replace(/\.\d+Z$/, 'Z');
        const count = await conn.query('SELECT COUNT() FROM Account');
        const recent = await conn.query(`SELECT COUNT() FROM Account WHERE CreatedDate >= ${hourAgo}`);
        const page = await conn.query(
            `SELECT Id, Name FROM Account WHERE CreatedDate >= ${hourAgo} AND NumberOfEmployees >= 10 ORDER BY NumberOfEmployees DESC LIMIT 2 OFFSET 1`);
        const relative = await conn.query(
            "SELECT COUNT() FROM Account WHERE CreatedDate = LAST_N_DAYS:1 AND Name LIKE 'Zeta Interop%'");
        const below = await conn.query(
            `SELECT Name FROM Account WHERE CreatedDate > ${hourAgo} AND NumberOfEmployees < 25 AND NumberOfEmployees <= 20 ORDER BY Name`);
        return {
            count: count.totalSize,
            countRecords: count.records.length,
            recent: recent.totalSize,
            relative: relative.totalSize,
            page: names(page.records),
            below: names(below.records),
        };
    });

    await step('query_all', async () => {
        await conn.sobject('Account').destroy(mine[2].id);
        const soql = "SELECT Id, Name, IsDeleted FROM Account WHERE Name = 'Zeta Interop C'";
        const live = await conn.query(soql);
        const all = await conn.query(soql, { scanAll: true });
        return { live: live.totalSize, all: all.records.map((r) => ({ Id: r.Id, Name: r.Name, IsDeleted: r.IsDeleted })) };
    });

    await step('replication', async () => {
        // A window from 10 minutes ago to 2 minutes ahead: the answer covers up to now.
        const start = new Date(Date.now() - 600e3).toISOString();
        const end = new Date(Date.now() + 120e3).toISOString();
        const updated = await conn.sobject('Account').updated(start, end);
        const deleted = await conn.sobject('Account').deleted(start, end);
        return {
            updated: [...updated.ids].sort(),
            deleted: deleted.deletedRecords.map((r) => r.id),
            mine: mine.map((r) => r.id),
        };
    });

    // jsforce's login without an OAuth client is the SOAP API's login(): at 64.0 (the last
    // version that has it) the session works for REST and ends with logout(); at 65.0 the org
    // refuses the call; a wrong password is INVALID_LOGIN.
    await step('soap_login', async () => {
        const soap = new jsforce.Connection({ loginUrl: env('SF_LOGIN_URL'), version: '64.0' });
        const info = await soap.login(env('SF_USERNAME'), env('SF_PASSWORD'));
        const count = await soap.query('SELECT COUNT() FROM Account');
        const token = soap.accessToken;
        const instanceUrl = soap.instanceUrl;
        await soap.logout();
        const failed = async (run) => {
            try {
                await run();
                return null;
            } catch (error) {
                return String(error?.errorCode ?? error?.message ?? error);
            }
        };
        const stale = new jsforce.Connection({ instanceUrl, accessToken: token, version: '64.0' });
        return {
            organizationId: info.organizationId,
            userId: info.id,
            instanceUrl,
            accounts: count.totalSize,
            accountsViaOAuth: (await conn.query('SELECT COUNT() FROM Account')).totalSize,
            afterLogout: await failed(() => stale.query('SELECT COUNT() FROM Account')),
            v65: await failed(() => new jsforce.Connection({ loginUrl: env('SF_LOGIN_URL'), version: '65.0' })
                .login(env('SF_USERNAME'), env('SF_PASSWORD'))),
            wrongPassword: await failed(() => new jsforce.Connection({ loginUrl: env('SF_LOGIN_URL'), version: '64.0' })
                .login(env('SF_USERNAME'), 'wrong')),
        };
    });

    await step('platform_event_rest', async () => {
        const published = await conn.sobject('Order_Event__e').create({ Order_Number__c: 'SO-REST', Quantity__c: 3 });
        const client = await connected();
        const events = await new Promise((resolve, reject) => {
            const got = [];
            client.subscribeFromEarliestEvent('/event/Order_Event__e', (_info, type, data) => {
                if (type === 'event') got.push(data);
                else if (type === 'lastEvent') resolve(got);
                else if (type === 'error') reject(data);
            }, 1);
        });
        client.close();
        return {
            published: { success: published.success, id: published.id, errors: published.errors },
            received: events.map((e) => ({
                id: e.id,
                Order_Number__c: e.payload.Order_Number__c,
                Quantity__c: e.payload.Quantity__c,
            })),
        };
    });
}

async function added() {
    await step('identity', async () => {
        const identity = await conn.identity();
        return { user_id: identity.user_id, organization_id: identity.organization_id, username: identity.username };
    });
    await step('resources', async () => ({ keys: Object.keys(await conn.request('/')).sort() }));
    await step('basic_info', async () => {
        const info = await conn.request('/sobjects/Account');
        return { name: info.objectDescribe?.name, urls: info.objectDescribe?.urls?.sobject, recentItems: Array.isArray(info.recentItems) };
    });
    await step('composite_tree', async () => {
        const tree = await conn.requestPost('/composite/tree/Account', {
            records: [
                { attributes: { type: 'Account', referenceId: 'acc1' }, Name: 'Tree One' },
                { attributes: { type: 'Account', referenceId: 'acc2' }, Name: 'Tree Two' },
            ],
        });
        return { hasErrors: tree.hasErrors, referenceIds: tree.results.map((r) => r.referenceId), ids: tree.results.map((r) => r.id) };
    });
    await step('composite_batch', async () => {
        const batch = await conn.requestPost('/composite/batch', {
            batchRequests: [
                { method: 'POST', url: 'v62.0/sobjects/Account', richInput: { Name: 'Batch One', NumberOfEmployees: 4 } },
                { method: 'GET', url: 'v62.0/query?q=SELECT+Name+FROM+Account+WHERE+Name+%3D+%27Batch+One%27' },
                { method: 'GET', url: 'v62.0/sobjects/Account/001000000000000AAA' },
            ],
        });
        return {
            hasErrors: batch.hasErrors,
            statusCodes: batch.results.map((r) => r.statusCode),
            created: batch.results[0].result?.success ?? null,
            queried: batch.results[1].result?.records?.map((r) => r.Name) ?? null,
            notFound: batch.results[2].result?.[0]?.errorCode ?? null,
        };
    });
    await step('soql_like_or', async () => {
        const found = await conn.query(
            "SELECT Id, Name FROM Account WHERE Name LIKE 'Tree%' OR (Name = 'Batch One' AND NumberOfEmployees != 5) ORDER BY Name");
        return { names: names(found.records) };
    });
}

const group = process.argv[2];
if (group === 'served') await served();
else if (group === 'added') await added();
else throw new Error(`unknown group ${group}: served or added`);
out('done', {});
process.exit(0);
