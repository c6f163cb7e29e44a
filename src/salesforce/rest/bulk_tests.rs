//! Bulk API 2.0, queryAll, COUNT() and replication calls against the scripted stub.
