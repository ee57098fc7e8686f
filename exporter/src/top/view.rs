//! Draws an `App` into a ratatui frame: title and view tabs, node header, status, sparklines of
//! the node's and the selected row's power, the table, the footer or filter prompt, and help.
//! Rendering only: it reads the state and never changes it. Small terminals get a message.

use super::app::{App, Status};
use super::model::Reading;
use super::table::{self, Column, View};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap,
};
use ratatui::Frame;
use std::collections::VecDeque;

/// Below this the full screen does not fit; a message says so instead.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 14;

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
    let [title, header, status, sparks, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(title_line(app), title);
    frame.render_widget(node_line(app.reading.as_ref()), header);
    frame.render_widget(status_line(app), status);
    draw_sparklines(frame, app, sparks);
    draw_table(frame, app, body);
    frame.render_widget(footer_line(app), footer);
    if app.help {
        draw_help(frame, area);
    }
}

fn title_line(app: &App) -> Line<'static> {
    let mut spans = vec![
        Span::styled("kepler-rs top ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{} every {}s  ", app.source, app.refresh_seconds)),
    ];
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

/// Node total, per zone, idle vs active, sources. Several nodes (Prometheus) are summed.
pub fn node_summary(reading: &Reading) -> String {
    let nodes: Vec<_> = reading.nodes.values().collect();
    let total = reading.total_watts();
    let idle: f64 = nodes.iter().map(|n| n.idle_watts()).sum();
    let active: f64 = nodes.iter().map(|n| n.active_watts()).sum();
    let system: f64 = nodes.iter().map(|n| n.system_watts()).sum();
    match nodes.as_slice() {
        [node] => {
            let zones: Vec<String> = node
                .zones
                .iter()
                .map(|(zone, f)| {
                    let counted = if node.counts_zone(zone) { "" } else { "*" };
                    format!("{zone}{counted} {:.1}", f.watts)
                })
                .collect();
            let usage = node
                .usage_ratio
                .map(|u| format!("  cpu {:.0}%", u * 100.0))
                .unwrap_or_default();
            format!(
                "{}  {total:.1} W  [{}]  idle {idle:.1}  active {active:.1}  system {system:.1}{usage}  energy:{}  cpu:{}",
                node.name,
                zones.join(", "),
                or_unknown(&node.energy_source),
                or_unknown(&node.cpu_source),
            )
        }
        many => {
            let estimated = many
                .iter()
                .filter(|n| n.energy_source == "estimate")
                .count();
            format!(
                "{} nodes  {total:.1} W  idle {idle:.1}  active {active:.1}  system {system:.1}  estimated: {estimated} nodes",
                many.len()
            )
        }
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "?"
    } else {
        s
    }
}

fn node_line(reading: Option<&Reading>) -> Line<'static> {
    match reading {
        Some(r) => Line::from(node_summary(r)),
        None => Line::from("waiting for the first reading..."),
    }
}

fn status_line(app: &App) -> Line<'static> {
    match &app.status {
        Status::Waiting => Line::from(Span::styled(
            "connecting...",
            Style::new().fg(Color::Yellow),
        )),
        Status::Ok => Line::from(Span::styled("ok", Style::new().fg(Color::Green))),
        Status::Failed { message, attempts } => {
            let kept = if app.reading.is_some() {
                ", showing the last good reading"
            } else {
                ""
            };
            Line::from(Span::styled(
                format!(
                    "error ({attempts} failed, retrying every {}s{kept}): {message}",
                    app.refresh_seconds
                ),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ))
        }
    }
}

fn bars(history: &VecDeque<f64>, width: u16) -> Vec<u64> {
    let skip = history.len().saturating_sub(usize::from(width));
    history
        .iter()
        .skip(skip)
        .map(|w| (w.max(0.0) * 100.0).round() as u64)
        .collect()
}

fn draw_sparklines(frame: &mut Frame, app: &App, area: Rect) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let inner = left.width.saturating_sub(2);
    let now = app.node_history.back().copied().unwrap_or(0.0);
    let node = Sparkline::default()
        .block(
            Block::new()
                .borders(Borders::ALL)
                .title(format!("node {now:.1} W")),
        )
        .data(bars(&app.node_history, inner))
        .style(Style::new().fg(Color::Cyan));
    frame.render_widget(node, left);
    let (title, data) = match (app.selected_row(), app.selected_history()) {
        (Some(row), Some(history)) => (
            format!("{} {:.2} W", row.name, row.watts),
            bars(history, right.width.saturating_sub(2)),
        ),
        _ => ("no row selected".to_string(), Vec::new()),
    };
    let selected = Sparkline::default()
        .block(Block::new().borders(Borders::ALL).title(title))
        .data(data)
        .style(Style::new().fg(Color::Magenta));
    frame.render_widget(selected, right);
}

/// Joules in the largest unit that keeps the number short.
pub fn joules_text(joules: f64) -> String {
    let units = [(1e9, "GJ"), (1e6, "MJ"), (1e3, "kJ")];
    for (scale, unit) in units {
        if joules.abs() >= scale {
            return format!("{:.2} {unit}", joules / scale);
        }
    }
    format!("{joules:.1} J")
}

fn header_cell(app: &App, column: Column, text: &'static str) -> Cell<'static> {
    if app.sort.column == column {
        let arrow = if app.sort.descending { "▼" } else { "▲" };
        Cell::from(format!("{text}{arrow}")).style(Style::new().add_modifier(Modifier::UNDERLINED))
    } else {
        Cell::from(text)
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
    let (name, detail) = app.view.headers();
    let header = Row::new(vec![
        header_cell(app, Column::Name, name),
        header_cell(app, Column::Detail, detail),
        header_cell(app, Column::Node, "NODE"),
        header_cell(app, Column::Watts, "WATTS"),
        header_cell(app, Column::Joules, "ENERGY"),
        header_cell(app, Column::Share, "SHARE"),
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    // Only the rows that fit are built (1,000 pods would otherwise cost milliseconds per frame):
    // a window over the rows that keeps the selection in view.
    let visible = usize::from(area.height.saturating_sub(2)).max(1);
    let offset = (app.selected + 1).saturating_sub(visible);
    let rows = app.rows.iter().skip(offset).take(visible).map(|r| {
        Row::new(vec![
            Cell::from(r.name.as_str()),
            Cell::from(r.detail.as_str()),
            Cell::from(r.node.as_str()),
            Cell::from(format!("{:>8.2}", r.watts)),
            Cell::from(format!("{:>10}", joules_text(r.joules))),
            Cell::from(format!("{:>5.1}%", r.share * 100.0)),
        ])
    });
    let widths = [
        Constraint::Fill(3),
        Constraint::Fill(2),
        Constraint::Fill(1),
        Constraint::Length(9),
        Constraint::Length(11),
        Constraint::Length(7),
    ];
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
        "{filter}q quit  ? help  / filter  Tab view  s/1-6 sort  r reverse"
    ))
}

pub const HELP: &str = "\
kepler-rs top: power of this node's (or cluster's) consumers

  q, Ctrl-C    quit
  ?            this help (any key closes it)
  Tab, ←/→     next / previous view
  p n u c o g  pods, namespaces, hub users, containers, processes, GPUs
  s            sort by the next column
  1..6         sort by name, detail, node, watts, energy, share (again: reverse)
  r            reverse the sort
  /            filter rows (Enter keeps, Esc clears)
  ↑/↓ j/k      select a row (its power is the right sparkline)

WATTS: power now (from the energy counters between refreshes).
ENERGY: since the exporter started. SHARE: of the node's total power.
Node total = package + dram, or psys alone; zones marked * are not added.";

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = area.width.saturating_sub(4).min(80);
    let height = area.height.saturating_sub(2).min(18);
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
    use crate::top::model::tests::{reading, TWO_PODS};
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

    #[test]
    fn snapshot_of_the_pods_view() {
        let app = app_with_users();
        let text = screen(&app, 100, 16);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/top/fixtures/screen_pods_100x16.txt"
        );
        if std::env::var_os("KEPLER_RS_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let expected = std::fs::read_to_string(path).unwrap();
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
        let text = screen(&app, 100, 16);
        assert!(text.contains("cannot connect to 127.0.0.1:1"), "{text}");
        assert!(text.contains("showing the last good reading"));
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
}
