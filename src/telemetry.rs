//! (module `telemetry`: under construction, see ARCHITECTURE.md)
