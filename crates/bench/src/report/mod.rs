//! The results page: markdown tables, a goal summary and SVG plots, written
//! into the output folder.

pub mod metric;
pub mod svg;

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::bench::Settings;
use crate::machine::Machine;
use crate::scenarios::Scenario;
pub use svg::Plot;

pub struct Table {
    pub caption: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One goal of a scenario and whether Legate met it.
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

/// A scenario's part of the page.
pub struct Section {
    pub number: u8,
    pub title: String,
    /// The measurement and its method, in a few sentences.
    pub method: String,
    pub goals: Vec<Goal>,
    pub tables: Vec<Table>,
    pub plots: Vec<Plot>,
    /// Warnings about the measurement itself (errors, missed rates).
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(scenario: &dyn Scenario, method: impl Into<String>) -> Section {
        Section {
            number: scenario.number(),
            title: scenario.title().to_string(),
            method: method.into(),
            goals: Vec::new(),
            tables: Vec::new(),
            plots: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Builds a section that reports why the scenario could not run.
    pub fn failed(scenario: &dyn Scenario, error: &anyhow::Error) -> Section {
        let mut section = Section::new(scenario, "");
        section.notes.push(format!("The scenario failed, so it has no figures: {error:#}"));
        section
    }
}

pub struct Page {
    pub machine: Machine,
    pub load_before: String,
    pub load_after: String,
    /// Share of the machine's CPU, in percent, that processes other than the
    /// harness and its children used during the run.
    pub foreign_cpu_percent: f64,
    pub tool_versions: Vec<String>,
    pub legate_version: String,
    pub settings: Settings,
    pub sections: Vec<Section>,
}

/// Writes RESULTS.md and every plot into `out`, and returns the page's path.
pub fn write(out: &Path, page: &Page) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("failed to create {}", out.display()))?;
    for plot in page.sections.iter().flat_map(|section| &section.plots) {
        let path = out.join(&plot.file_name);
        std::fs::write(&path, svg::render(plot)).with_context(|| format!("failed to write {}", path.display()))?;
    }
    let path = out.join("RESULTS.md");
    std::fs::write(&path, render(page)).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

fn render(page: &Page) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# Legate benchmark results\n");
    let _ = writeln!(
        text,
        "Written by `legate-bench`{}. Every figure is the median of {} runs, with the min and max of those runs. \
         Ratios compare medians: \"x best peer\" divides by the better of nginx and HAProxy, \"x direct\" by the \
         load generator talking straight to the echo upstream. The absolute numbers belong to this machine only; \
         the ratios are the result.\n",
        if page.settings.quick { " in --quick mode (a check that the harness works; do not compare these numbers)" } else { "" },
        page.settings.runs
    );
    render_machine(&mut text, page);
    render_goals(&mut text, &page.sections);
    let mut sections: Vec<&Section> = page.sections.iter().collect();
    sections.sort_by_key(|section| section.number);
    for section in sections {
        render_section(&mut text, section);
    }
    text
}

fn render_machine(text: &mut String, page: &Page) {
    let machine = &page.machine;
    let settings = &page.settings;
    let _ = writeln!(text, "## Machine and setup\n");
    let _ = writeln!(text, "- CPU: {}, {} cores; memory {:.1} GiB; {}", machine.cpu_model, machine.cores, machine.memory_gib, machine.kernel);
    let _ = writeln!(text, "- Load average (1, 5, 15 min): {} before the run, {} after", page.load_before, page.load_after);
    let _ = writeln!(
        text,
        "- Other processes on the machine used {:.1}% of its CPU during the run (/proc/stat minus the harness and its children)",
        page.foreign_cpu_percent
    );
    if let Some(warning) = busy_warning(&page.load_before, machine.cores, page.foreign_cpu_percent) {
        let _ = writeln!(text, "- **{warning}**");
    }
    let _ = writeln!(text, "- Legate: {}, `--concurrency 1`", page.legate_version);
    for version in &page.tool_versions {
        let _ = writeln!(text, "- {version}");
    }
    let _ = writeln!(
        text,
        "- Every proxy runs one worker pinned to core 0; the load generator and the echo upstream share core 1 \
         (`taskset`). {} downstream keep-alive connections, {}-byte responses, warm-up {:?} before each run, \
         saturation runs of {:?}, fixed-rate runs of {:?}.\n",
        settings.connections, settings.body_bytes, settings.warm_up, settings.saturation_duration, settings.fixed_rate_duration
    );
}

/// Returns a warning when the 1-minute load average before the run exceeds
/// a quarter of the cores, or other processes used more than
/// `FOREIGN_CPU_LIMIT_PERCENT` of the CPU during the run.
fn busy_warning(load_average: &str, cores: usize, foreign_cpu_percent: f64) -> Option<String> {
    let one_minute: f64 = load_average.split_whitespace().next().and_then(|value| value.parse().ok()).unwrap_or(0.0);
    let busy_at_start = one_minute > cores as f64 / 4.0;
    let busy_during = foreign_cpu_percent > FOREIGN_CPU_LIMIT_PERCENT;
    (busy_at_start || busy_during).then(|| {
        format!(
            "The machine was busy (1-minute load {one_minute:.2} on {cores} cores at the start, \
             {foreign_cpu_percent:.1}% of the CPU used by other processes during the run), so the figures are noisy."
        )
    })
}

/// CPU share of other processes above which a run is marked as noisy.
const FOREIGN_CPU_LIMIT_PERCENT: f64 = 5.0;

fn render_goals(text: &mut String, sections: &[Section]) {
    let _ = writeln!(text, "## Goals\n");
    let _ = writeln!(text, "| scenario | goal | measured | result |");
    let _ = writeln!(text, "|---|---|---|---|");
    for section in sections {
        for goal in &section.goals {
            let verdict = if goal.met { "met" } else { "**missed**" };
            let _ = writeln!(text, "| {} | {} | {} | {verdict} |", section.number, goal.goal, goal.measured);
        }
        if section.goals.is_empty() {
            let _ = writeln!(text, "| {} | - | no figures, see the scenario | **failed** |", section.number);
        }
    }
    let missed: Vec<String> = sections
        .iter()
        .flat_map(|section| section.goals.iter().filter(|goal| !goal.met).map(move |goal| format!("scenario {}: {}", section.number, goal.goal)))
        .collect();
    if missed.is_empty() {
        let _ = writeln!(text, "\nLegate met every goal measured in this run.\n");
    } else {
        let _ = writeln!(text, "\nLegate missed {} goal(s): {}.\n", missed.len(), missed.join("; "));
    }
}

fn render_section(text: &mut String, section: &Section) {
    let _ = writeln!(text, "## Scenario {}: {}\n", section.number, section.title);
    if !section.method.is_empty() {
        let _ = writeln!(text, "{}\n", section.method);
    }
    for note in &section.notes {
        let _ = writeln!(text, "> **Note:** {note}\n");
    }
    for table in &section.tables {
        render_table(text, table);
    }
    for plot in &section.plots {
        let _ = writeln!(text, "![{}]({})\n", plot.title, plot.file_name);
    }
}

fn render_table(text: &mut String, table: &Table) {
    let _ = writeln!(text, "{}:\n", table.caption);
    let _ = writeln!(text, "| {} |", table.headers.join(" | "));
    let _ = writeln!(text, "|{}", "---|".repeat(table.headers.len()));
    for row in &table.rows {
        let _ = writeln!(text, "| {} |", row.join(" | "));
    }
    text.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_warning_on_load_or_foreign_cpu() {
        assert!(busy_warning("0.40 0.30 0.20", 2, 1.0).is_none());
        assert!(busy_warning("1.20 0.30 0.20", 2, 1.0).is_some());
        assert!(busy_warning("0.10 0.30 0.20", 2, 12.0).is_some());
        assert!(busy_warning("", 2, 0.0).is_none());
    }
}
