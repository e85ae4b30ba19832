//! `process_*` metrics, as Prometheus' client libraries export them by default (client_golang,
//! prometheus_client): CPU seconds, resident and virtual memory, open and maximum file
//! descriptors, start time. Read from `/proc/self` at each scrape, into the scrape only. CPU
//! time and start time are exact to the kernel's tick, not rounded to whole seconds.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, Opts};

/// The process metrics of this process.
#[derive(Debug)]
pub(crate) struct ProcessMetrics {
    cpu: Counter,
    resident: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge,
    descs: Vec<Desc>,
}

impl ProcessMetrics {
    pub(crate) fn new() -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| Gauge::with_opts(Opts::new(name, help));
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))?;
        let resident = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )?;
        let virtual_memory = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )?;
        let open_fds = gauge("process_open_fds", "Number of open file descriptors.")?;
        let max_fds = gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        )?;
        let start_time = gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )?;
        // The start time never changes: read once.
        let ticks = procfs::ticks_per_second() as f64;
        if let (Ok(stat), Ok(boot)) = (
            procfs::process::Process::myself().and_then(|me| me.stat()),
            procfs::boot_time_secs(),
        ) {
            start_time.set(boot as f64 + stat.starttime as f64 / ticks);
        }
        let descs = [&resident, &virtual_memory, &open_fds, &max_fds, &start_time]
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .chain(cpu.desc().into_iter().cloned())
            .collect();
        Ok(Self {
            cpu,
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            start_time,
            descs,
        })
    }

    /// Reads `/proc/self`; a value that cannot be read keeps its last one.
    fn refresh(&self) {
        let Ok(me) = procfs::process::Process::myself() else {
            return;
        };
        let ticks = procfs::ticks_per_second() as f64;
        if let Ok(stat) = me.stat() {
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            let past = self.cpu.get();
            if cpu > past {
                self.cpu.inc_by(cpu - past);
            }
            self.virtual_memory.set(stat.vsize as f64);
            self.resident.set((stat.rss * procfs::page_size()) as f64);
        }
        if let Ok(n) = me.fd_count() {
            self.open_fds.set(n as f64);
        }
        if let Ok(limits) = me.limits() {
            let max = match limits.max_open_files.soft_limit {
                procfs::process::LimitValue::Value(n) => n as f64,
                procfs::process::LimitValue::Unlimited => f64::INFINITY,
            };
            self.max_fds.set(max);
        }
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        [
            &self.resident,
            &self.virtual_memory,
            &self.open_fds,
            &self.max_fds,
            &self.start_time,
        ]
        .iter()
        .flat_map(|g| g.collect())
        .chain(self.cpu.collect())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_is_described_with_fractions_of_a_second() {
        let metrics = ProcessMetrics::new().expect("metrics");
        // Some CPU time to count.
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let families = metrics.collect();
        let value = |name: &str| {
            let f = families.iter().find(|f| f.name() == name).expect(name);
            let m = &f.get_metric()[0];
            if name.ends_with("_total") {
                m.get_counter().get_value()
            } else {
                m.get_gauge().get_value()
            }
        };
        assert!(value("process_cpu_seconds_total") > 0.0);
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") > value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        assert_ne!(start.fract(), 0.0, "not rounded to seconds");
    }
}
