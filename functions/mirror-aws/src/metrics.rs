//! CloudWatch behind a small trait: the rebuilder fleet's traffic, read with one
//! `GetMetricData` call per size-fleet run. [`SdkMetrics`] implements it with
//! aws-sdk-cloudwatch; tests implement it in memory or against moto.
//!
//! What is read: `DatagramsReceived` and `KernelDrops` (per-minute `Sum`) in the stack's
//! namespace with the one dimension `AutoScalingGroupName` — what the rebuilders' CloudWatch
//! agent produces (deploy/cloudwatch-agent.json: counters are sent as the delta since the last
//! scrape, so the per-minute sum over the group is the fleet's count in that minute). The window
//! is the last [`WINDOW_MINUTES`] complete minutes (the current minute is still being filled;
//! `EndTime` "is exclusive", GetMetricData): the busiest minute sizes the fleet, the latest
//! minute with data says whether the kernel still drops. Minutes without data are absent from the
//! answer (not zero); no datapoint at all means "no data", and size-fleet falls back to the
//! session count.

use std::future::Future;

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_smithy_types::DateTime;
use mirror::capacity::Traffic;

use crate::error::AwsError;

/// Complete minutes read per run.
pub const WINDOW_MINUTES: u64 = 5;
/// The metric of received datagrams (per-minute sum over the group).
pub const DATAGRAMS_METRIC: &str = "DatagramsReceived";
/// The metric of datagrams the kernel dropped (receive buffers full).
pub const DROPS_METRIC: &str = "KernelDrops";
/// The one dimension of both.
pub const GROUP_DIMENSION: &str = "AutoScalingGroupName";
/// The period and the statistic: per-minute sums.
const PERIOD_SECS: i32 = 60;

/// The fleet's traffic from CloudWatch.
pub trait MetricsApi: Send + Sync + 'static {
    /// One `GetMetricData` for the two metrics of the group `asg_name` in `namespace`, over the
    /// [`WINDOW_MINUTES`] complete minutes before `now_unix`.
    fn fleet_traffic(
        &self,
        namespace: &str,
        asg_name: &str,
        now_unix: u64,
    ) -> impl Future<Output = Result<Traffic, AwsError>> + Send;
}

/// `[start, end)` of the window: whole minutes, the current one left out.
pub fn window(now_unix: u64) -> (u64, u64) {
    let end = now_unix / 60 * 60;
    (end.saturating_sub(WINDOW_MINUTES * 60), end)
}

/// The traffic of two answers (timestamps and values, newest first or not): the busiest
/// minute's datagrams, and the drops of the newest minute with data.
pub fn traffic_of(datagrams: &[(i64, f64)], drops: &[(i64, f64)]) -> Traffic {
    let count = |v: f64| {
        if v.is_finite() && v > 0.0 {
            v.round() as u64
        } else {
            0
        }
    };
    Traffic {
        datagrams_per_minute: datagrams.iter().map(|(_, v)| count(*v)).max(),
        kernel_drops: drops.iter().max_by_key(|(t, _)| *t).map(|(_, v)| count(*v)),
    }
}

/// [`MetricsApi`] on aws-sdk-cloudwatch.
#[derive(Clone, Debug)]
pub struct SdkMetrics {
    client: aws_sdk_cloudwatch::Client,
}

impl SdkMetrics {
    pub fn new(client: aws_sdk_cloudwatch::Client) -> Self {
        SdkMetrics { client }
    }
}

fn query(id: &str, namespace: &str, metric: &str, asg_name: &str) -> MetricDataQuery {
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(namespace)
                        .metric_name(metric)
                        .dimensions(
                            Dimension::builder()
                                .name(GROUP_DIMENSION)
                                .value(asg_name)
                                .build(),
                        )
                        .build(),
                )
                .period(PERIOD_SECS)
                .stat("Sum")
                .build(),
        )
        .return_data(true)
        .build()
}

impl MetricsApi for SdkMetrics {
    async fn fleet_traffic(
        &self,
        namespace: &str,
        asg_name: &str,
        now_unix: u64,
    ) -> Result<Traffic, AwsError> {
        let (start, end) = window(now_unix);
        let secs = |t: u64| DateTime::from_secs(i64::try_from(t).unwrap_or(i64::MAX));
        let out = self
            .client
            .get_metric_data()
            .metric_data_queries(query("datagrams", namespace, DATAGRAMS_METRIC, asg_name))
            .metric_data_queries(query("drops", namespace, DROPS_METRIC, asg_name))
            .start_time(secs(start))
            .end_time(secs(end))
            .scan_by(ScanBy::TimestampDescending)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetMetricData", &e))?;
        let series = |id: &str| -> Vec<(i64, f64)> {
            out.metric_data_results()
                .iter()
                .filter(|r| r.id() == Some(id))
                .flat_map(|r| {
                    r.timestamps()
                        .iter()
                        .map(DateTime::secs)
                        .zip(r.values().iter().copied())
                })
                .collect()
        };
        Ok(traffic_of(&series("datagrams"), &series("drops")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_whole_minutes_before_the_current_one() {
        assert_eq!(window(1_000_059), (999_720, 1_000_020));
        assert_eq!(window(1_000_020).1 % 60, 0);
        assert_eq!(window(30), (0, 0));
    }

    #[test]
    fn the_busiest_minute_and_the_latest_drops_are_read() {
        let t = traffic_of(
            &[(120, 1_000.0), (60, 9_000.4), (180, 3_000.0)],
            &[(60, 5.0), (180, 0.0), (120, 7.0)],
        );
        assert_eq!(t.datagrams_per_minute, Some(9_000));
        assert_eq!(t.kernel_drops, Some(0), "the newest minute had no drops");
        assert_eq!(traffic_of(&[], &[]), Traffic::default());
        assert_eq!(
            traffic_of(&[(0, f64::NAN)], &[(0, -1.0)]),
            Traffic {
                datagrams_per_minute: Some(0),
                kernel_drops: Some(0)
            }
        );
    }
}
