// The first client of the managed subscription `Interop_Orders` (run by scenario.mjs as its own
// process): reads 3 events by developer name, commits the second one's replay id, waits for the
// org's answer to the commit, prints one JSON line and exits, which ends its stream as a client
// restart does.

import { collectManaged, connected, summary } from './managed_lib.mjs';

const client = await connected();
let committed = false;
let answered;
const answer = new Promise((resolve) => { answered = resolve; });
const before = await collectManaged(client, 'Interop_Orders', 3, () => committed && answered());
const subscriptionId = before[0].subscriptionId;
client.commitReplayId(subscriptionId, before[1].replayId);
committed = true;
// The org answers a commit with a ManagedFetchResponse carrying `commit_response` and no events,
// which the client reports as a keepalive. The org's keepalives come only after
// --keepalive-interval without a response, far longer than the commit's round trip.
await answer;
console.log(JSON.stringify({ subscriptionId, committed: before[1].replayId, before: summary(before) }));
process.exit(0);
