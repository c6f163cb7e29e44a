//! (module `pubsub`: under construction, see ARCHITECTURE.md)
