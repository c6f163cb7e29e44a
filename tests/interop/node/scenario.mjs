// One scenario of clients nobody at forcebridge wrote, against `forcebridge sim --tls-ca`:
// jsforce over REST (login, create, upsert by External Id, a query paged with queryMore,
// describe, delete) and pozil's Pub/Sub client over gRPC (subscribe from earliest, from a replay
// id and from latest; publish; publishBatch over PublishStream). It prints one JSON object per
// line ({"step": ..., ...}); tests/interop.rs asserts them. Settings come from the environment:
// SF_LOGIN_URL, SF_PUBSUB (host:port), SF_CLIENT_ID, SF_CLIENT_SECRET, SF_USERNAME, SF_PASSWORD
// (password + security token), and NODE_EXTRA_CA_CERTS for the REST side's TLS (the gRPC side
// bundles its own CA list, so it is told `rejectUnauthorizedSsl: false`, its own option).

import { execFileSync } from 'node:child_process';

import jsforce from 'jsforce';

import { collectManaged, connected, summary } from './managed_lib.mjs';

const env = (name) => {
    const value = process.env[name];
    if (!value) throw new Error(`missing ${name}`);
    return value;
};
const out = (step, fields) =>
    console.log(JSON.stringify({ step, ...fields }, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)));

async function rest() {
    // The OAuth 2.0 username-password flow (jsforce's SOAP `login()` needs a client id to take it).
    const conn = new jsforce.Connection({
        oauth2: { loginUrl: env('SF_LOGIN_URL'), clientId: env('SF_CLIENT_ID'), clientSecret: env('SF_CLIENT_SECRET') },
        version: '62.0',
    });
    const user = await conn.login(env('SF_USERNAME'), env('SF_PASSWORD'));
    out('login', { organizationId: user.organizationId, userId: user.id });

    const created = await conn.sobject('Account').create([
        { Name: 'Interop One', Industry: 'Energy' },
        { Name: 'Interop Two', Industry: 'Retail' },
        { Name: 'Interop Three' },
    ]);
    out('create', { results: created.map((r) => ({ success: r.success, id: r.id })) });

    const upsert1 = await conn.sobject('Account').upsert({ Name: 'Interop Ext', External_Id__c: 'EXT-1' }, 'External_Id__c');
    const upsert2 = await conn.sobject('Account').upsert({ Name: 'Interop Ext 2', External_Id__c: 'EXT-1' }, 'External_Id__c');
    out('upsert', { first: upsert1, second: upsert2 });

    // More rows than one page (2,000): jsforce follows nextRecordsUrl with queryMore.
    let result = await conn.query('SELECT Id, Name FROM Account ORDER BY Name');
    const pages = [result.records.length];
    let total = result.records.length;
    while (!result.done) {
        result = await conn.queryMore(result.nextRecordsUrl);
        pages.push(result.records.length);
        total += result.records.length;
    }
    out('query', { totalSize: result.totalSize, fetched: total, pages });

    const one = await conn.query("SELECT Id, Name, Industry FROM Account WHERE Name = 'Interop One'");
    out('query_one', { records: one.records.map((r) => ({ Id: r.Id, Name: r.Name, Industry: r.Industry })) });

    const describe = await conn.sobject('Account').describe();
    const fields = Object.fromEntries(describe.fields
        .filter((f) => ['Id', 'Name', 'External_Id__c', 'BillingCity', 'Name_Upper__c'].includes(f.name))
        .map((f) => [f.name, { type: f.type, externalId: f.externalId, calculated: f.calculated }]));
    out('describe', { name: describe.name, fields });

    const deleted = await conn.sobject('Account').destroy(created[2].id);
    out('delete', { success: deleted.success, id: deleted.id });
    return { conn, created };
}

/// Subscribes and resolves with the events once `count` arrived. Up to 100 (the most one
/// subscription may have requested) the client itself ends with LAST_EVENT; beyond, it is asked
/// for events without end (it tops its credits up itself) and the count decides. `onKeepalive`
/// is called at each keepalive (an empty FetchResponse, sent by the org after its
/// `--keepalive-interval` without a response: the subscription's position is fixed by then).
function collect(client, how, topic, count, replayId, onKeepalive = () => {}) {
    const requested = count > 100 ? null : count;
    return new Promise((resolve, reject) => {
        const events = [];
        const callback = (_info, type, data) => {
            if (type === 'event') {
                events.push(data);
                if (requested === null && events.length === count) resolve(events);
            } else if (type === 'lastEvent') {
                resolve(events);
            } else if (type === 'grpcKeepAlive') {
                onKeepalive();
            } else if (type === 'error') {
                reject(data);
            }
        };
        if (how === 'earliest') client.subscribeFromEarliestEvent(topic, callback, requested);
        else if (how === 'replay') client.subscribeFromReplayId(topic, callback, requested, replayId);
        else client.subscribe(topic, callback, requested);
    });
}

const change = (e) => ({
    replayId: e.replayId,
    changeType: e.payload.ChangeEventHeader.changeType,
    recordIds: e.payload.ChangeEventHeader.recordIds,
    changedFields: e.payload.ChangeEventHeader.changedFields,
    Name: e.payload.Name ?? null,
});

async function pubsub(conn) {
    const topic = '/data/AccountChangeEvent';
    const first = await connected();
    const earliest = await collect(first, 'earliest', topic, 6);
    out('earliest', { events: earliest.map(change) });
    first.close();

    const second = await connected();
    const fromReplay = await collect(second, 'replay', topic, 2, earliest[3].replayId);
    out('from_replay', { after: earliest[3].replayId, events: fromReplay.map(change) });
    second.close();

    // A client logged in with the JWT bearer flow and its own default assertion (`exp` 5 minutes
    // ahead), reading the first event.
    const jwt = await connected('oauth-jwt-bearer');
    const firstByJwt = await collect(jwt, 'earliest', topic, 1);
    out('jwt', { events: firstByJwt.map(change) });
    jwt.close();

    const client = await connected();
    // The record is created once the subscription's first keepalive came: its position (the
    // latest event) was fixed when the org read the FetchRequest, before that keepalive.
    let opened;
    const open = new Promise((resolve) => { opened = resolve; });
    const latest = collect(client, 'latest', topic, 1, undefined, () => opened());
    await open;
    const fresh = await conn.sobject('Account').create({ Name: 'Interop Latest' });
    out('latest', { created: fresh.id, events: (await latest).map(change) });

    const orders = '/event/Order_Event__e';
    const single = await client.publish(orders, {
        CreatedDate: Date.now(),
        CreatedById: '005000000000000AAA',
        Order_Number__c: { string: 'SO-SINGLE' },
        Amount__c: null,
        Status__c: null,
        Customer_Id__c: null,
        Quantity__c: null,
    }, 'corr-single');
    out('publish', { correlationKey: single.correlationKey, replayId: single.replayId, error: single.error ?? null });

    const batch = Array.from({ length: 500 }, (_v, i) => ({
        id: `corr-${i}`,
        payload: {
            CreatedDate: Date.now(),
            CreatedById: '005000000000000AAA',
            Order_Number__c: { string: `SO-${i}` },
            Amount__c: null,
            Status__c: null,
            Customer_Id__c: null,
            Quantity__c: null,
        },
    }));
    const acknowledged = await new Promise((resolve, reject) => {
        const results = [];
        client.publishBatch(orders, batch, (_info, type, data) => {
            if (type === 'publishResponse') {
                results.push(...data.results);
                if (results.length === batch.length) resolve(results);
            } else if (type === 'error') {
                reject(data);
            }
        }).catch(reject);
    });
    out('publish_batch', {
        count: acknowledged.length,
        correlationKeys: acknowledged.map((r) => r.correlationKey),
        replayIds: acknowledged.map((r) => r.replayId),
    });

    const reader = await connected();
    const received = await collect(reader, 'earliest', orders, 501);
    reader.close();
    await managed(conn, orders);
    out('received', {
        count: received.length,
        orderNumbers: received.map((e) => e.payload.Order_Number__c),
        replayIds: received.map((e) => e.replayId),
    });
    client.close();
}

/// A managed subscription (Beta): created through the Tooling API with jsforce; a first client
/// process (`managed_first.mjs`) reads it by name and commits a replay id, then exits (closing a
/// client in-process leaves its streams open in grpc-js); a second client reads it by Id and
/// must resume right after the commit.
async function managed(conn, topicName) {
    const created = await conn.tooling.sobject('ManagedEventSubscription').create({
        FullName: 'Interop_Orders',
        Metadata: { label: 'Interop Orders', topicName, defaultReplay: 'EARLIEST', errorRecoveryReplay: 'LATEST', state: 'RUN' },
    });
    const first = JSON.parse(execFileSync(process.execPath, ['managed_first.mjs'], { env: process.env })
        .toString().trim().split('\n').pop());
    let after;
    for (let attempt = 0; ; attempt++) {
        const second = await connected();
        try {
            after = await collectManaged(second, first.subscriptionId, 3);
            second.close();
            break;
        } catch (error) {
            second.close();
            // The server releases the subscription once it sees the first client's stream end.
            if (attempt > 150 || !String(error?.details ?? error).includes('already used')) throw error;
            await new Promise((r) => setTimeout(r, 200));
        }
    }
    out('managed', {
        created: { success: created.success, id: created.id },
        subscriptionId: first.subscriptionId,
        committed: first.committed,
        before: first.before,
        after: summary(after),
    });
}

try {
    const { conn } = await rest();
    await pubsub(conn);
    out('done', {});
    process.exit(0);
} catch (error) {
    console.error(error);
    out('failed', { message: String(error?.message ?? error), cause: String(error?.cause?.message ?? '') });
    process.exit(1);
}
