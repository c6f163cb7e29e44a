// What scenario.mjs and managed_first.mjs share: a connected pozil client and the reading of a
// managed subscription. Settings from the environment (see scenario.mjs).

import PubSubApiClient from 'salesforce-pubsub-api-client';

const env = (name) => {
    const value = process.env[name];
    if (!value) throw new Error(`missing ${name}`);
    return value;
};
const quiet = { debug() {}, info() {}, warn() {}, error: (...a) => console.error(...a) };

/// A connected client. The client keeps one gRPC stream per topic and sends a later subscribe
/// call's FetchRequest on it, where the replay options of any but the first FetchRequest have
/// no effect (Pub/Sub API, "Subscribe RPC Method"): each way of subscribing gets its own client.
export async function connected() {
    const client = new PubSubApiClient({
        authType: 'oauth-client-credentials',
        loginUrl: env('SF_LOGIN_URL'),
        clientId: env('SF_CLIENT_ID'),
        clientSecret: env('SF_CLIENT_SECRET'),
        pubSubEndpoint: env('SF_PUBSUB'),
        rejectUnauthorizedSsl: false,
    }, quiet);
    await client.connect();
    return client;
}

/// Resolves with the first `count` events of a managed subscription.
export function collectManaged(client, idOrName, count) {
    return new Promise((resolve, reject) => {
        const events = [];
        client.subscribeWithManagedSubscription(idOrName, (info, type, data) => {
            if (type === 'event') events.push({ subscriptionId: info.subscriptionId, ...data });
            else if (type === 'lastEvent') resolve(events);
            else if (type === 'error') reject(data);
        }, count).catch(reject);
    });
}

export const summary = (events) =>
    events.map((e) => ({ replayId: e.replayId, Order_Number__c: e.payload.Order_Number__c }));
