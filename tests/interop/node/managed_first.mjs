// The first client of the managed subscription `Interop_Orders` (run by scenario.mjs as its own
// process): reads 3 events by developer name, commits the second one's replay id, prints one
// JSON line and exits, which ends its stream as a client restart does.

import { collectManaged, connected, summary } from './managed_lib.mjs';

const client = await connected();
const before = await collectManaged(client, 'Interop_Orders', 3);
const subscriptionId = before[0].subscriptionId;
client.commitReplayId(subscriptionId, before[1].replayId);
// The commit travels on the stream: give the server a moment before the process ends.
await new Promise((r) => setTimeout(r, 500));
console.log(JSON.stringify({ subscriptionId, committed: before[1].replayId, before: summary(before) }));
process.exit(0);
