//! The bus metrics every binary has: `switchboard_<service>_nats_reconnects_total`
//! and `switchboard_<service>_bus_dropped_total`.

/// `switchboard_<service>_<metric>`, interned for the life of the process:
/// call it once per component, not per event.
pub(crate) fn name(service: &str, metric: &str) -> &'static str {
    Box::leak(format!("switchboard_{service}_{metric}").into_boxed_str())
}

/// Describes the bus metrics of `service` and starts them at zero.
pub fn describe(service: &str) {
    let reconnects = name(service, "nats_reconnects_total");
    let dropped = name(service, "bus_dropped_total");
    metrics::describe_counter!(reconnects, "Reconnections to NATS after the first connect.");
    metrics::describe_counter!(dropped, "Bus messages dropped because a subscriber fell behind.");
    metrics::counter!(reconnects).absolute(0);
    metrics::counter!(dropped).absolute(0);
}
