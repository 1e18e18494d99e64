//! Prometheus gauges of each observation (the names the Grafana dashboard uses); the
//! recorder and the `/metrics` server are [`jobq_common::metrics`].

use jobq_common::domain::Observation;

/// Sets every gauge from one observation.
pub fn export(o: &Observation) {
    metrics::gauge!("jobq_observation_arrival_rate").set(o.avg_rate_of_arrival);
    metrics::gauge!("jobq_observation_service_rate").set(o.avg_rate_of_service);
    metrics::gauge!("jobq_observation_finish_rate").set(o.avg_rate_of_finished);
    metrics::gauge!("jobq_observation_response_time_seconds").set(o.avg_response_time);
    metrics::gauge!("jobq_queue_depth").set(o.queue_depth as f64);
    metrics::gauge!("jobq_workers").set(o.workers as f64);
    metrics::gauge!("jobq_busy_slots").set(o.busy_slots as f64);
    metrics::gauge!("jobq_queue_wait_p50_seconds").set(o.queue_wait_p50);
    metrics::gauge!("jobq_queue_wait_p95_seconds").set(o.queue_wait_p95);
    metrics::gauge!("jobq_desired_workers").set(o.desired_workers as f64);
    metrics::gauge!("jobq_deadline_jobs").set(o.deadline_jobs as f64);
    metrics::gauge!("jobq_deadlines_at_risk").set(o.deadlines_at_risk as f64);
}
