//! Draws an `App` into a ratatui frame: title and view tabs, node header, status, sparklines of
//! the node's and the selected row's power, the table, the footer or filter prompt, and help.
//! Rendering only: it reads the state and never changes it. Small terminals get a message.

use super::app::{App, Status};
use super::model::Reading;
#[cfg(test)]
use super::table::joules_text;
use super::table::{self, Column, View};
use crate::remote::series::{figure, or_if_empty};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap,
};
use ratatui::Frame;
use std::collections::{BTreeSet, VecDeque};

/// Below this the full screen does not fit; a message says so instead.
pub(crate) const MIN_WIDTH: u16 = 60;
pub(crate) const MIN_HEIGHT: u16 = 14;

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "terminal too small ({}x{}); kepler-rs top needs {MIN_WIDTH}x{MIN_HEIGHT}. q quits.",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let summary = match &app.reading {
        Some(r) => node_summary(r),
        None => vec!["waiting for the first reading...".to_string()],
    };
    // An error gets two lines (wrapped), so its message is whole on a narrow terminal.
    let status_height = match app.status {
        Status::Failed { .. } => 2,
        _ => 1,
    };
    let [title, header, status, sparks, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(summary.len().clamp(1, 3) as u16),
        Constraint::Length(status_height),
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(title_line(app), title);
    frame.render_widget(
        Paragraph::new(summary.into_iter().map(Line::from).collect::<Vec<_>>()),
        header,
    );
    frame.render_widget(
        Paragraph::new(status_line(app)).wrap(Wrap { trim: true }),
        status,
    );
    draw_sparklines(frame, app, sparks);
    draw_table(frame, app, body);
    frame.render_widget(footer_line(app), footer);
    if app.help {
        draw_help(frame, area);
    }
}

fn title_line(app: &App) -> Line<'static> {
    let mut spans = vec![Span::styled(
        "kepler-rs top ",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    for view in View::ALL {
        let style = if view == app.view {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        spans.push(Span::styled(format!(" {} ", view.title()), style));
    }
    Line::from(spans)
}

/// The header: CPU and GPU power and their total, then idle vs active of each, then the zones and
/// sources; one line each, so an 80-column terminal shows them whole. Several nodes (Prometheus)
/// are summed.
pub(crate) fn node_summary(reading: &Reading) -> Vec<String> {
    let nodes: Vec<_> = reading.nodes.values().collect();
    let cpu: f64 = nodes.iter().map(|n| n.cpu_watts).sum();
    let gpu: f64 = nodes.iter().map(|n| n.gpu_watts).sum();
    let total = cpu + gpu;
    let idle: f64 = nodes.iter().map(|n| n.idle_watts()).sum();
    let active: f64 = nodes.iter().map(|n| n.active_watts()).sum();
    let system: f64 = nodes.iter().map(|n| n.system_watts()).sum();
    let gpus = &reading.gpus;
    let cpu_split = format!(
        "CPU idle {} active {} system {}",
        figure(idle, 1),
        figure(active, 1),
        figure(system, 1)
    );
    let (gpu_power, gpu_split) = if gpus.is_empty() {
        ("GPU none".to_string(), String::new())
    } else {
        let idle: f64 = gpus.iter().map(|g| g.watts.idle).sum();
        let active: f64 = gpus.iter().map(|g| g.watts.active).sum();
        let count = match gpus.len() {
            1 => "1 GPU".to_string(),
            n => format!("{n} GPUs"),
        };
        let split = format!(
            "  {count} idle {} active {}",
            figure(idle, 1),
            figure(active, 1)
        );
        (format!("GPU {} W", figure(gpu, 1)), split)
    };
    let (who, usage, sources) = match nodes.as_slice() {
        [node] => {
            let zones: Vec<String> = node
                .zones
                .iter()
                .map(|(zone, f)| {
                    let counted = if node.counts_zone(zone) { "" } else { "*" };
                    format!("{zone}{counted} {}", figure(f.watts, 1))
                })
                .collect();
            let usage = node
                .usage_ratio
                .map(|u| format!("  cpu {}%", figure(u * 100.0, 0)))
                .unwrap_or_default();
            let sources = format!(
                "[{}]  energy:{}  cpu:{}",
                zones.join(", "),
                or_if_empty(&node.energy_source, "?"),
                or_if_empty(&node.cpu_source, "?"),
            );
            (node.name.clone(), usage, sources)
        }
        many => {
            let estimated = many
                .iter()
                .filter(|n| n.energy_source == "estimate")
                .count();
            let with_gpus: BTreeSet<&str> = gpus.iter().map(|g| g.node.as_str()).collect();
            let sources = format!(
                "estimated: {estimated} nodes  with GPUs: {} nodes",
                with_gpus.len()
            );
            (format!("{} nodes", many.len()), String::new(), sources)
        }
    };
    vec![
        format!(
            "{who}  CPU {} W  {gpu_power}  total {} W{usage}",
            figure(cpu, 1),
            figure(total, 1)
        ),
        format!("{cpu_split}{gpu_split}"),
        sources,
    ]
}

fn status_line(app: &App) -> Line<'static> {
    let source = Span::raw(format!("  {} every {}s", app.source, app.refresh_seconds));
    match &app.status {
        Status::Waiting => Line::from(vec![
            Span::styled("connecting...", Style::new().fg(Color::Yellow)),
            source,
        ]),
        Status::Ok => {
            let mut spans = vec![Span::styled("ok", Style::new().fg(Color::Green)), source];
            // A series that is NaN or infinite shows as n/a; say which, so it is not a mystery.
            if let Some(first) = app.reading.as_ref().and_then(|r| r.warnings.first()) {
                spans.push(Span::styled(
                    format!("  n/a: {first}"),
                    Style::new().fg(Color::Yellow),
                ));
            }
            Line::from(spans)
        }
        Status::Failed { message, attempts } => {
            let kept = if app.reading.is_some() {
                ", showing the last good reading"
            } else {
                ""
            };
            Line::from(Span::styled(
                format!(
                    "error: {message} ({attempts} failed, retrying every {}s{kept})",
                    app.refresh_seconds
                ),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ))
        }
    }
}

fn draw_sparklines(frame: &mut Frame, app: &App, area: Rect) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let now = app.node_history.back().copied().unwrap_or(0.0);
    let what = match &app.reading {
        Some(r) if !r.gpus.is_empty() => "node CPU+GPU",
        _ => "node",
    };
    let title = format!("{what} {} W", figure(now, 1));
    draw_sparkline(frame, left, title, Some(&app.node_history), Color::Cyan);
    let (title, history) = match (app.selected_row(), app.selected_history()) {
        (Some(row), Some(history)) => {
            let title = format!("{} {} W", row.name, figure(row.watts, 2));
            (title, Some(history))
        }
        _ => ("no row selected".to_string(), None),
    };
    draw_sparkline(frame, right, title, history, Color::Magenta);
}

/// A boxed sparkline of the latest points of `history` (watts, oldest first) that fit in `area`.
fn draw_sparkline(
    frame: &mut Frame,
    area: Rect,
    title: String,
    history: Option<&VecDeque<f64>>,
    color: Color,
) {
    let width = usize::from(area.width.saturating_sub(2));
    let bars: Vec<u64> = history
        .into_iter()
        .flat_map(|h| h.iter().skip(h.len().saturating_sub(width)))
        .map(|w| (w.max(0.0) * 100.0).round() as u64)
        .collect();
    let sparkline = Sparkline::default()
        .block(Block::new().borders(Borders::ALL).title(title))
        .data(bars)
        .style(Style::new().fg(color));
    frame.render_widget(sparkline, area);
}

fn header_cell(app: &App, column: Column) -> Cell<'static> {
    let text = column.header(app.view);
    if app.sort.column == column {
        let arrow = if app.sort.descending { "▼" } else { "▲" };
        Cell::from(format!("{text}{arrow}")).style(Style::new().add_modifier(Modifier::UNDERLINED))
    } else {
        Cell::from(text)
    }
}

/// Below this width a single node's NODE column is left out (every row would repeat it).
const NODE_COLUMN_MIN_WIDTH: u16 = 100;

/// The columns on screen: the view's, less NODE where one node fills a narrow terminal.
fn screen_columns(app: &App, width: u16) -> Vec<Column> {
    let one_node = app.reading.as_ref().is_some_and(|r| r.nodes.len() <= 1);
    table::columns(app.reading.as_ref(), app.view)
        .into_iter()
        .filter(|c| *c != Column::Node || !one_node || width >= NODE_COLUMN_MIN_WIDTH)
        .collect()
}

/// A cell as the screen shows it: numbers right-aligned in their column, one space short of it.
fn cell_text(row: &table::Row, column: Column) -> String {
    let text = row.cell(column);
    match width(column) {
        Constraint::Length(width) => format!("{text:>0$}", usize::from(width - 1)),
        _ => text,
    }
}

fn width(column: Column) -> Constraint {
    match column {
        Column::Name => Constraint::Fill(3),
        Column::Detail => Constraint::Fill(2),
        Column::Node => Constraint::Fill(1),
        Column::Watts => Constraint::Length(9),
        Column::CpuWatts | Column::GpuWatts => Constraint::Length(8),
        Column::Joules => Constraint::Length(11),
        Column::Share => Constraint::Length(7),
    }
}

fn draw_table(frame: &mut Frame, app: &App, area: Rect) {
    if let Some(reading) = &app.reading {
        if let Some(reason) = table::empty_reason(reading, app.view) {
            frame.render_widget(
                Paragraph::new(reason)
                    .wrap(Wrap { trim: true })
                    .block(Block::new().borders(Borders::TOP).title(app.view.title())),
                area,
            );
            return;
        }
    }
    let columns = screen_columns(app, area.width);
    let header = Row::new(columns.iter().map(|c| header_cell(app, *c)))
        .style(Style::new().add_modifier(Modifier::BOLD));
    // Only the rows that fit are built (1,000 pods would otherwise cost milliseconds per frame):
    // a window over the rows that keeps the selection in view.
    let visible = usize::from(area.height.saturating_sub(2)).max(1);
    let offset = (app.selected + 1).saturating_sub(visible);
    let rows = app
        .rows
        .iter()
        .skip(offset)
        .take(visible)
        .map(|r| Row::new(columns.iter().map(|c| Cell::from(cell_text(r, *c)))));
    let widths: Vec<Constraint> = columns.iter().map(|c| width(*c)).collect();
    let title = format!("{} ({} rows)", app.view.title(), app.rows.len());
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::new().borders(Borders::TOP).title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default()
        .with_selected((!app.rows.is_empty()).then_some(app.selected - offset));
    frame.render_stateful_widget(table, area, &mut state);
}

fn footer_line(app: &App) -> Line<'static> {
    if app.editing_filter {
        return Line::from(vec![
            Span::styled("filter: ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{}_", app.filter)),
            Span::raw("  (Enter keeps, Esc clears)"),
        ]);
    }
    let filter = if app.filter.is_empty() {
        String::new()
    } else {
        format!("filter \"{}\" (Esc clears)  ", app.filter)
    };
    Line::from(format!(
        "{filter}q quit  ? help  / filter  Tab view  s/1-8 sort  r reverse"
    ))
}

pub(crate) const HELP: &str = "\
kepler-rs top: power of this node's (or cluster's) consumers

  q, Ctrl-C    quit
  ?            this help (any key closes it)
  Tab, ←/→     next / previous view
  p n u c o g  pods, namespaces, hub users, containers, processes, GPUs
  s            sort by the next column
  1..8         sort by column 1 to 8 (again: reverse):
               name, detail, node, watts, CPU W, GPU W, energy, share
  r            reverse the sort
  /            filter rows (Enter keeps, Esc clears)
  ↑/↓ j/k      select a row (its power is the right sparkline)

WATTS: power now, CPU + GPU (from the energy counters between
refreshes); CPU W and GPU W apart when the source has GPUs. ENERGY:
since the exporter started. SHARE: of the node's total power; in GPUs, a
device's of its node's and the rows under a device (idle, pods, MIG
instances, unattributed) of the device's. CPU total = package + dram, or
psys alone; zones marked * are not added.";

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = area.width.saturating_sub(4).min(80);
    let height = area
        .height
        .saturating_sub(2)
        .min(HELP.lines().count() as u16 + 2);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(HELP)
            .wrap(Wrap { trim: false })
            .block(Block::new().borders(Borders::ALL).title("help")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::app::tests::{app_with_users, key};
    use crate::top::model::tests::{reading, GPU_NODE, TWO_PODS};
    use crate::top::table::Sort;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::KeyCode;
    use ratatui::Terminal;

    fn screen(app: &App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buffer = terminal.backend().buffer();
        let mut out = String::new();
        for y in 0..height {
            for x in 0..width {
                out.push_str(buffer[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    /// Compare a screen with its committed copy in src/top/fixtures.
    fn assert_snapshot(text: &str, file: &str) {
        let path = format!("{}/src/top/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("KEPLER_RS_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, text).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text, expected,
            "screen changed (KEPLER_RS_UPDATE_SNAPSHOTS=1 rewrites it):\n{text}"
        );
    }

    #[test]
    fn users_view_and_help_render() {
        let mut app = app_with_users();
        app.on_key(key(KeyCode::Char('u')));
        let text = screen(&app, 100, 16);
        assert!(text.contains("HUB USER"), "{text}");
        assert!(text.contains("alice"));
        assert!(text.contains("(not a hub user)"));
        app.on_key(key(KeyCode::Char('?')));
        let text = screen(&app, 100, 30);
        assert!(text.contains("sort by the next column"), "{text}");
        // At 80x24 every line of the help is shown whole: none wraps mid-phrase or is cut.
        let text = screen(&app, 80, 24);
        for line in HELP.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                text.contains(line.trim_end()),
                "{line:?} not whole in:\n{text}"
            );
        }
    }

    #[test]
    fn no_hub_users_says_so() {
        let mut app = app_with_users();
        app.on_reading(Ok(reading(TWO_PODS)), 2000.0);
        app.on_key(key(KeyCode::Char('u')));
        let text = screen(&app, 100, 16);
        assert!(text.contains("no JupyterHub user data"), "{text}");
    }

    #[test]
    fn errors_are_shown_and_tiny_terminals_get_a_message() {
        let mut app = app_with_users();
        app.on_reading(
            Err("cannot connect to 127.0.0.1:1: connection refused".into()),
            1.0,
        );
        // At 80 columns the message is whole and the rest wraps onto a second line.
        let text = screen(&app, 80, 24);
        assert!(
            text.contains("error: cannot connect to 127.0.0.1:1: connection refused"),
            "{text}"
        );
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains("showing the last good reading"), "{text}");
        assert!(text.contains("jupyter-alice"), "the last rows stay: {text}");
        let tiny = screen(&app, 20, 5);
        assert!(tiny.contains("terminal too"), "{tiny}");
        for (w, h) in [(1, 1), (0, 0), (59, 14), (60, 13), (60, 14), (300, 100)] {
            screen(&app, w, h); // never panics
        }
    }

    #[test]
    fn the_table_scrolls_to_keep_the_selection_in_view() {
        let mut text = String::new();
        for pod in 0..100 {
            text.push_str(&format!(
                "kepler_pod_cpu_watts{{node_name=\"n\",pod_id=\"pod-{pod:03}\",zone=\"package\"}} {pod}\n"
            ));
        }
        let mut app = App::new(
            "x".into(),
            1.0,
            View::Pods,
            Default::default(),
            String::new(),
        );
        app.on_reading(Ok(reading(&text)), 1.0);
        let first = screen(&app, 100, 20);
        assert!(
            first.contains("pod-099") && !first.contains("pod-000"),
            "{first}"
        );
        app.on_key(key(KeyCode::End));
        let last = screen(&app, 100, 20);
        assert!(
            last.contains("pod-000") && !last.contains("pod-099"),
            "{last}"
        );
    }

    #[test]
    fn joules_are_shown_in_readable_units() {
        assert_eq!(joules_text(12.34), "12.3 J");
        assert_eq!(joules_text(12_345.0), "12.35 kJ");
        assert_eq!(joules_text(3.6e6), "3.60 MJ");
    }

    fn gpu_app(view: View) -> App {
        let mut app = App::new(
            "http://g1:28282/metrics".into(),
            2.0,
            view,
            Sort::default(),
            String::new(),
        );
        app.on_reading(Ok(reading(GPU_NODE)), 1000.0);
        app
    }

    #[test]
    fn snapshot_of_the_pods_view() {
        assert_snapshot(
            &screen(&app_with_users(), 100, 16),
            "screen_pods_100x16.txt",
        );
    }

    #[test]
    fn snapshot_of_the_gpu_view_at_80x24() {
        let app = gpu_app(View::Gpus);
        assert_snapshot(&screen(&app, 80, 24), "screen_gpus_80x24.txt");
        let pods = gpu_app(View::Pods);
        assert_snapshot(&screen(&pods, 80, 24), "screen_gpu_pods_80x24.txt");
    }

    #[test]
    fn every_view_is_readable_at_80x24() {
        let mut app = gpu_app(View::Pods);
        for view in View::ALL {
            let text = screen(&app, 80, 24);
            let lines: Vec<&str> = text.lines().collect();
            // Every tab is on the title line, whole.
            for v in View::ALL {
                assert!(lines[0].contains(&format!(" {} ", v.title())), "{text}");
            }
            // The header: CPU and GPU power, labelled, and their split, each line whole.
            assert!(
                lines[1].starts_with("g1  CPU 50.0 W  GPU 580.0 W  total 630.0 W"),
                "{text}"
            );
            assert!(
                lines[2].starts_with(
                    "CPU idle 25.0 active 25.0 system 0.0  3 GPUs idle 170.0 active 410.0"
                ),
                "{text}"
            );
            assert!(lines[3].contains("energy:rapl"), "{text}");
            assert!(
                lines.iter().any(|l| l.starts_with(view.title())),
                "{view:?}:\n{text}"
            );
            let has_table = table::empty_reason(app.reading.as_ref().unwrap(), view).is_none();
            if view != View::Gpus && has_table {
                assert!(text.contains("CPU W") && text.contains("GPU W"), "{text}");
            }
            app.on_key(key(KeyCode::Tab));
        }
        assert_eq!(app.view, View::Pods, "Tab goes round every view");
    }

    #[test]
    fn the_cluster_header_sums_cpu_and_gpu_of_every_node() {
        let two = format!("{GPU_NODE}\n{}", GPU_NODE.replace("\"g1\"", "\"g2\""));
        let r = reading(&two);
        let lines = node_summary(&r);
        assert_eq!(
            lines[0],
            "2 nodes  CPU 100.0 W  GPU 1160.0 W  total 1260.0 W"
        );
        assert_eq!(lines[2], "estimated: 0 nodes  with GPUs: 2 nodes");
        let rows = table::table(&r, View::Gpus, Sort::default(), "");
        assert_eq!(
            rows.iter().filter(|r| r.depth == 0).count(),
            6,
            "GPUs of both nodes"
        );
        assert_eq!(
            node_summary(&reading(TWO_PODS))[0].split("  ").nth(2),
            Some("GPU none")
        );
    }
}
