//! Scenario 6: grpc-web binary and text calls against native gRPC through
//! the same Legate (with the grpc_web filter), CPU per call at saturation.

use std::collections::BTreeMap;

use anyhow::Context;

use super::grpc::{self, CallRun};
use super::http1::summarize;
use super::Scenario;
use crate::bench::Bench;
use crate::grpc_client::Form;
use crate::report::metric::{format_ratio, format_value};
use crate::report::{Goal, Plot, Section, Table};
use crate::stats::Summary;

pub struct GrpcWeb;

/// Legate's CPU per grpc-web call must be at most this multiple of its CPU
/// per native gRPC call.
const GOAL: f64 = 1.15;

impl Scenario for GrpcWeb {
    fn number(&self) -> u8 {
        6
    }

    fn title(&self) -> &'static str {
        "grpc-web binary and text against native gRPC through Legate"
    }

    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section> {
        bench.ensure_grpc_lab()?;
        let mut runs: BTreeMap<Form, Vec<CallRun>> = BTreeMap::new();
        for round in 0..bench.settings.runs {
            for form in Form::ALL {
                let lab = bench.grpc.as_ref().context("gRPC lab not started")?;
                let (port, pid) = (lab.web.port, Some(lab.web.process.pid()));
                let run = grpc::saturate(&bench.tools, &bench.settings, &lab.dir, port, pid, form)?;
                bench.grpc.as_mut().context("gRPC lab not started")?.ensure_running()?;
                eprintln!(
                    "  round {round} {:16} {:>9.0} calls/s, {} failed, {} us proxy CPU per call",
                    form.name(),
                    run.load.requests_per_second,
                    run.load.errors,
                    format_value(run.cpu_per_call_us())
                );
                runs.entry(form).or_default().push(run);
            }
        }

        let settings = &bench.settings;
        let mut section = Section::new(
            self,
            format!(
                "One Legate with the grpc_web filter before the router, fed by h2load over h2c ({} connections, \
                 {} streams each) in turn with the same unary call as native gRPC (`application/grpc`), grpc-web \
                 binary (`application/grpc-web+proto`) and grpc-web text (`application/grpc-web-text+proto`, the \
                 body in base64). Legate turns the grpc-web calls into gRPC towards the upstream of scenario 4 and \
                 the responses back into grpc-web. CPU per call as in scenario 4, from saturation runs of {:?}.",
                settings.grpc_connections, settings.grpc_streams, settings.saturation_duration
            ),
        );
        let cpu: BTreeMap<Form, Summary> =
            runs.iter().filter_map(|(form, form_runs)| Some((*form, summarize(form_runs, CallRun::cpu_per_call_us)?))).collect();
        let calls: BTreeMap<Form, Summary> =
            runs.iter().filter_map(|(form, form_runs)| Some((*form, summarize(form_runs, |run| run.load.requests_per_second)?))).collect();
        let native = cpu.get(&Form::Grpc).map(|summary| summary.median);
        for form in [Form::GrpcWeb, Form::GrpcWebText] {
            section.goals.push(goal(form, cpu.get(&form).map(|summary| summary.median), native));
        }
        for (form, form_runs) in &runs {
            let failed: u64 = form_runs.iter().map(|run| run.load.errors).sum();
            if failed > 0 {
                section.notes.push(format!("{} failed {failed} calls over all runs.", form.name()));
            }
        }
        section.tables.push(form_table("Legate CPU per call (lower is better)", "us", &cpu));
        section.tables.push(form_table("Calls per second at saturation (higher is better)", "calls/s", &calls));
        section.plots.push(Plot {
            file_name: "grpc_web_cpu_per_call.svg".into(),
            title: "Legate CPU per call: grpc-web against native gRPC".into(),
            unit: "CPU microseconds per call".into(),
            series: vec!["CPU".into()],
            groups: cpu.iter().map(|(form, summary)| (form.name().to_string(), vec![Some(*summary)])).collect(),
        });
        Ok(section)
    }
}

fn goal(form: Form, value: Option<f64>, native: Option<f64>) -> Goal {
    let ratio = ratio_to(value, native);
    Goal {
        goal: format!("{} CPU per call <= {GOAL}x native gRPC", form.name()),
        measured: format!("{} ({} us)", format_ratio(ratio), value.map_or("-".to_string(), format_value)),
        met: ratio.is_some_and(|ratio| ratio <= GOAL),
    }
}

fn ratio_to(value: Option<f64>, reference: Option<f64>) -> Option<f64> {
    let (value, reference) = (value?, reference?);
    (reference > 0.0 && value.is_finite()).then(|| value / reference)
}

/// Builds a table with a row per form: median, min, max and the ratio to native gRPC.
fn form_table(caption: &str, unit: &str, values: &BTreeMap<Form, Summary>) -> Table {
    let native = values.get(&Form::Grpc).map(|summary| summary.median);
    let rows = values
        .iter()
        .map(|(form, summary)| {
            vec![
                form.name().to_string(),
                format_value(summary.median),
                format_value(summary.min),
                format_value(summary.max),
                format_ratio(ratio_to(Some(summary.median), native)),
            ]
        })
        .collect();
    let headers = ["form", &format!("median ({unit})"), "min", "max", "x native gRPC"].map(str::to_string).to_vec();
    Table { caption: caption.to_string(), headers, rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goal_compares_with_native() {
        assert!(goal(Form::GrpcWeb, Some(11.0), Some(10.0)).met);
        assert!(!goal(Form::GrpcWebText, Some(12.0), Some(10.0)).met);
        assert!(!goal(Form::GrpcWeb, Some(11.0), None).met);
        let summary = |median| Summary { median, min: median, max: median };
        let table = form_table("cpu", "us", &BTreeMap::from([(Form::Grpc, summary(10.0)), (Form::GrpcWebText, summary(12.0))]));
        assert_eq!(table.rows[1], ["grpc-web text", "12.0", "12.0", "12.0", "1.20x"]);
    }
}
