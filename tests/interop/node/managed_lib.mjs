// What scenario.mjs and managed_first.mjs share: a connected pozil client and the reading of a
// managed subscription. Settings from the environment (see scenario.mjs).

import fs from 'node:fs';

import PubSubApiClient from 'salesforce-pubsub-api-client';

const env = (name) => {
    const value = process.env[name];
    if (!value) throw new Error(`missing ${name}`);
    return value;
};
const quiet = { debug() {}, info() {}, warn() {}, error: (...a) => console.error(...a) };

/// A connected client, logged in with `authType`: the client credentials flow, or the JWT bearer
/// flow as the demo user with the org's demo key (SF_JWT_KEY). The client keeps one gRPC stream
/// per topic and sends a later subscribe call's FetchRequest on it, where the replay options of
/// any but the first FetchRequest have no effect (Pub/Sub API, "Subscribe RPC Method"): each way
/// of subscribing gets its own client. The gRPC side trusts only the CA list bundled in the
/// package (dist/cacert-*.pem, read in `connect()`), so it is told `rejectUnauthorizedSsl: false`,
/// its own option; its REST side (login) trusts NODE_EXTRA_CA_CERTS.
export async function connected(authType = 'oauth-client-credentials') {
    const auth = authType === 'oauth-jwt-bearer'
        ? { username: env('SF_USERNAME'), privateKey: fs.readFileSync(env('SF_JWT_KEY'), 'utf8') }
        : { clientSecret: env('SF_CLIENT_SECRET') };
    const client = new PubSubApiClient({
        authType,
        loginUrl: env('SF_LOGIN_URL'),
        clientId: env('SF_CLIENT_ID'),
        ...auth,
        pubSubEndpoint: env('SF_PUBSUB'),
        rejectUnauthorizedSsl: false,
    }, quiet);
    await client.connect();
    return client;
}

/// Resolves with the first `count` events of a managed subscription; `onKeepalive` is called at
/// each response without events (a keepalive, or the answer to a commit: the client reports both
/// as `grpcKeepAlive`).
export function collectManaged(client, idOrName, count, onKeepalive = () => {}) {
    return new Promise((resolve, reject) => {
        const events = [];
        client.subscribeWithManagedSubscription(idOrName, (info, type, data) => {
            if (type === 'event') events.push({ subscriptionId: info.subscriptionId, ...data });
            else if (type === 'lastEvent') resolve(events);
            else if (type === 'grpcKeepAlive') onKeepalive();
            else if (type === 'error') reject(data);
        }, count).catch(reject);
    });
}

export const summary = (events) =>
    events.map((e) => ({ replayId: e.replayId, Order_Number__c: e.payload.Order_Number__c }));
