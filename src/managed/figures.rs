//! The `resources_*` series of `/metrics`: every registered kind's [`KindStats`] at
//! scrape time, one series per kind.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

use super::{HandleManager, KindStats};

/// The collector [`HandleManager::register_metrics`] registers.
pub(super) struct HandleFigures(pub(super) HandleManager);

impl std::fmt::Debug for HandleFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleFigures").finish_non_exhaustive()
    }
}

/// The `kind` label of resource series: a registered kind's name, never client text.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// One series per resource kind of the figure `metric` picks; nothing without a kind.
fn by_kind<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    stats: &[(&'static str, KindStats)],
    metric: impl Fn(&KindStats) -> M,
) -> std::fmt::Result {
    let Some((_, first)) = stats.first() else {
        return Ok(());
    };
    let mut family = enc.encode_descriptor(name, help, None, metric(first).metric_type())?;
    for (kind, figures) in stats {
        let label = KindLabel { kind };
        metric(figures).encode(family.encode_family(&label)?)?;
    }
    Ok(())
}

impl Collector for HandleFigures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let stats: Vec<_> = self.0.stats().into_iter().collect();
        let gauge_of = |v: u64| ConstGauge::new(v as f64);
        by_kind(
            &mut enc,
            "resources_active",
            "Open managed resources",
            &stats,
            |s| gauge_of(s.active),
        )?;
        by_kind(
            &mut enc,
            "resources_references",
            "Leases held on managed resources",
            &stats,
            |s| gauge_of(s.references),
        )?;
        by_kind(
            &mut enc,
            "resources_idle",
            "Open managed resources nobody references",
            &stats,
            |s| gauge_of(s.idle),
        )?;
        by_kind(
            &mut enc,
            "resources_created",
            "Managed resources created",
            &stats,
            |s| ConstCounter::new(s.created_total),
        )?;
        by_kind(
            &mut enc,
            "resources_cleaned",
            "Managed resources cleaned up",
            &stats,
            |s| ConstCounter::new(s.cleaned_total),
        )?;
        by_kind(
            &mut enc,
            "resources_failed",
            "Managed resource creations that failed",
            &stats,
            |s| ConstCounter::new(s.failed_total),
        )
    }
}
