//! The benchmark as a self-contained HTML page: the table, fidelity against
//! bytes shipped, and per-query scores, drawn as inline SVG by plotters (no
//! scripts, fonts or other network resources).

use plotters::prelude::*;

use super::Evaluation;
use super::bench::BenchReport;

#[derive(Debug, thiserror::Error)]
#[error("drawing the report: {0}")]
pub struct ReportError(String);

fn drawing<E: std::fmt::Debug>(e: E) -> ReportError {
    ReportError(format!("{e:?}"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Fidelity against bytes shipped (log scale), one point per method; head
/// sampling rates joined by a line.
pub fn fidelity_plot(report: &BenchReport) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let bytes: Vec<f64> = report.methods.iter().map(|m| m.bytes.max(1.0)).collect();
        let lo = bytes.iter().copied().fold(f64::INFINITY, f64::min) / 2.0;
        let hi = bytes.iter().copied().fold(0.0, f64::max) * 2.0;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Fidelity against bytes shipped ({} traces, {} spans)", report.traces, report.spans),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.05f64)
            .map_err(drawing)?;
        chart
            .configure_mesh()
            .x_desc("bytes shipped per window (log scale)")
            .y_desc("overall fidelity")
            .x_label_formatter(&|v| format!("{:.0} KB", v / 1e3))
            .draw()
            .map_err(drawing)?;
        let head: Vec<(f64, f64)> =
            report.methods.iter().filter(|m| m.method.starts_with("head")).map(|m| (m.bytes, m.fidelity)).collect();
        chart
            .draw_series(LineSeries::new(head.clone(), BLUE.stroke_width(2)))
            .map_err(drawing)?
            .label("head sampling 1:5 … 1:100 + gzip")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        for m in &report.methods {
            let color = if m.method.starts_with("gent") {
                RED
            } else if m.method.starts_with("head") {
                BLUE
            } else if m.method.starts_with("tail") {
                GREEN
            } else {
                BLACK
            };
            let point = (m.bytes.max(1.0), m.fidelity);
            chart.draw_series(std::iter::once(Circle::new(point, 5, color.filled()))).map_err(drawing)?;
            let label = m.method.split(" + ").next().unwrap_or(&m.method).to_string();
            chart
                .draw_series(std::iter::once(Text::new(label, point, ("sans-serif", 13).into_font().color(&color))))
                .map_err(drawing)?;
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    Ok(svg)
}

/// Per-query scores of gent and of head sampling at 1:15 and 1:100, as bars.
fn query_plot(report: &BenchReport) -> Result<String, ReportError> {
    let picked: Vec<_> = report
        .methods
        .iter()
        .filter(|m| m.method.starts_with("gent") || m.method.starts_with("head 1:15 ") || m.method.starts_with("head 1:100 "))
        .collect();
    let names: Vec<String> = picked.first().map(|m| m.queries.keys().cloned().collect()).unwrap_or_default();
    let mut svg = String::new();
    {
        let height = 80 + 22 * names.len() as u32 * picked.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (900, height.max(200))).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let rows = (names.len() * picked.len()).max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption("Score per query", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(20)
            .build_cartesian_2d(0f64..1.0f64, 0f64..rows)
            .map_err(drawing)?;
        chart.configure_mesh().disable_y_mesh().y_labels(0).x_desc("score").draw().map_err(drawing)?;
        let colors = [RED, BLUE, CYAN];
        for (qi, name) in names.iter().enumerate() {
            for (mi, m) in picked.iter().enumerate() {
                let y = rows - (qi * picked.len() + mi) as f64 - 1.0;
                let score = m.queries.get(name).copied().unwrap_or(0.0);
                let color = colors[mi % colors.len()];
                chart
                    .draw_series(std::iter::once(Rectangle::new([(0.0, y + 0.15), (score, y + 0.85)], color.filled())))
                    .map_err(drawing)?;
                let label = format!("{name} — {} {score:.2}", m.method.split(" + ").next().unwrap_or(&m.method));
                chart
                    .draw_series(std::iter::once(Text::new(
                        label,
                        (0.01, y + 0.75),
                        ("sans-serif", 12).into_font().color(&BLACK),
                    )))
                    .map_err(drawing)?;
            }
        }
        root.present().map_err(drawing)?;
    }
    Ok(svg)
}

/// The whole page.
pub fn html(report: &BenchReport) -> Result<String, ReportError> {
    let mut rows = String::new();
    for m in &report.methods {
        let cells: Vec<String> = m.cells().iter().map(|c| format!("<td>{}</td>", escape(c))).collect();
        rows.push_str(&format!("<tr>{}</tr>\n", cells.concat()));
    }
    Ok(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>gent cost–fidelity</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>\
         <h1>gent cost–fidelity benchmark</h1>\
         <p>{} traces, {} spans; every span as gzip OTLP: {} bytes. Prices: ${}/GB, ${}/CPU-hour, ${}/GPU-hour.</p>\
         <table><tr><th>method</th><th>bytes</th><th>vs gzip</th><th>compute s</th><th>cost $</th><th>fidelity</th></tr>\n{}</table>\
         {}{}</body></html>\n",
        report.traces,
        report.spans,
        report.gzip_bytes,
        report.prices.per_gb,
        report.prices.per_cpu_hour,
        report.prices.per_gpu_hour,
        rows,
        fidelity_plot(report)?,
        query_plot(report)?
    ))
}

/// One evaluation (`gent eval --report`): the scores as a table and as bars.
pub fn eval_html(evaluation: &Evaluation) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let n = evaluation.queries.len().max(1);
        let root = SVGBackend::with_string(&mut svg, (900, 80 + 26 * n as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Score per query (overall {:.3})", evaluation.overall), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(20)
            .build_cartesian_2d(0f64..1.0f64, 0f64..n as f64)
            .map_err(drawing)?;
        chart.configure_mesh().disable_y_mesh().y_labels(0).x_desc("score").draw().map_err(drawing)?;
        for (i, q) in evaluation.queries.iter().enumerate() {
            let y = (n - i - 1) as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new([(0.0, y + 0.15), (q.score, y + 0.85)], BLUE.mix(0.6).filled())))
                .map_err(drawing)?;
            let label = format!("{} {:.3}", q.name, q.score);
            chart
                .draw_series(std::iter::once(Text::new(label, (0.01, y + 0.7), ("sans-serif", 12).into_font().color(&BLACK))))
                .map_err(drawing)?;
        }
        root.present().map_err(drawing)?;
    }
    let rows: String = evaluation
        .queries
        .iter()
        .map(|q| format!("<tr><td>{}</td><td>{:?}</td><td>{:.3}</td></tr>\n", escape(&q.name), q.kind, q.score))
        .collect();
    Ok(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>gent eval</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #bbb;padding:4px 8px}}</style></head><body><h1>gent eval</h1>\
         <p>Overall fidelity {:.3} (mean of the query scores).</p>\
         <table><tr><th>query</th><th>kind</th><th>score</th></tr>\n{rows}</table>{svg}</body></html>\n",
        evaluation.overall
    ))
}
