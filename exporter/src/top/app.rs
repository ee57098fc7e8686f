//! The state of the live screen and what each key does: view, sort, filter, selection, help, and
//! the power history behind the sparklines. Pure: no terminal, no network, no clock of its own,
//! so key handling and refreshes are tested directly.

use super::model::{RateTracker, Reading};
use super::table::{self, Column, Row, Sort, View};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use std::collections::{HashMap, VecDeque};

/// Points kept per sparkline (one per refresh).
pub(crate) const HISTORY_POINTS: usize = 240;

/// The outcome of the last fetch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Status {
    Waiting,
    Ok,
    /// The last fetch failed; the screen keeps the last good reading and retries.
    Failed {
        message: String,
        attempts: u32,
    },
}

#[derive(Debug)]
pub struct App {
    /// Where readings come from, for the title.
    pub(crate) source: String,
    pub(crate) refresh_seconds: f64,
    pub(crate) view: View,
    pub(crate) sort: Sort,
    pub(crate) filter: String,
    pub(crate) editing_filter: bool,
    pub(crate) help: bool,
    pub(crate) selected: usize,
    pub(crate) status: Status,
    pub(crate) reading: Option<Reading>,
    /// The current view's rows (filtered, sorted), rebuilt when the reading or a key changes them.
    pub(crate) rows: Vec<Row>,
    /// Node (all nodes) total watts, oldest first.
    pub(crate) node_history: VecDeque<f64>,
    /// Power history of the current view's rows, by row key.
    row_history: HashMap<String, VecDeque<f64>>,
    rates: RateTracker,
    pub(crate) quit: bool,
}

impl App {
    pub fn new(
        source: String,
        refresh_seconds: f64,
        view: View,
        sort: Sort,
        filter: String,
    ) -> App {
        App {
            source,
            refresh_seconds,
            view,
            sort,
            filter,
            editing_filter: false,
            help: false,
            selected: 0,
            status: Status::Waiting,
            reading: None,
            rows: Vec::new(),
            node_history: VecDeque::with_capacity(HISTORY_POINTS),
            row_history: HashMap::new(),
            rates: RateTracker::default(),
            quit: false,
        }
    }

    /// A fetch finished. `now_seconds` is wall-clock Unix time (the rate clock of last resort).
    pub fn on_reading(&mut self, result: Result<Reading, String>, now_seconds: f64) {
        match result {
            Ok(mut reading) => {
                self.rates.update(&mut reading, now_seconds);
                push(&mut self.node_history, reading.total_watts());
                self.reading = Some(reading);
                self.status = Status::Ok;
                self.rebuild(true);
            }
            Err(message) => {
                let attempts = match &self.status {
                    Status::Failed { attempts, .. } => attempts + 1,
                    _ => 1,
                };
                self.status = Status::Failed { message, attempts };
            }
        }
    }

    /// Add a point to the history of every row of the current view (filtered out or not); rows
    /// that went away drop theirs. Other views start their sparklines when shown.
    fn record(&mut self, all_rows: &[Row]) {
        let mut kept = HashMap::with_capacity(all_rows.len());
        for row in all_rows {
            let mut history = self.row_history.remove(&row.key).unwrap_or_default();
            push(&mut history, row.watts);
            kept.insert(row.key.clone(), history);
        }
        self.row_history = kept;
    }

    pub(crate) fn selected_row(&self) -> Option<&Row> {
        self.rows.get(self.selected)
    }

    pub(crate) fn selected_history(&self) -> Option<&VecDeque<f64>> {
        self.row_history.get(&self.selected_row()?.key)
    }

    /// Recompute the rows, keeping the selection on the same row where it still exists; with
    /// `record`, add a point to every row's history first.
    fn rebuild(&mut self, record: bool) {
        let keep = self.selected_row().map(|r| r.key.clone());
        let mut rows = match &self.reading {
            Some(r) => table::rows(r, self.view),
            None => Vec::new(),
        };
        if record {
            self.record(&rows);
        }
        table::filter(&mut rows, &self.filter);
        table::sort(&mut rows, self.sort);
        self.rows = rows;
        self.selected = keep
            .and_then(|k| self.rows.iter().position(|r| r.key == k))
            .unwrap_or(self.selected)
            .min(self.rows.len().saturating_sub(1));
    }

    fn set_view(&mut self, view: View) {
        if self.view != view {
            self.view = view;
            self.selected = 0;
            self.row_history.clear();
            self.rebuild(true);
        }
    }

    fn set_sort(&mut self, column: Column) {
        let descending = if self.sort.column == column {
            !self.sort.descending
        } else {
            column.descending_by_default()
        };
        self.sort = Sort { column, descending };
        self.rebuild(false);
    }

    pub(crate) fn on_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !c.is_control() => self.filter.push(c),
                _ => return,
            }
            self.selected = 0;
            self.rebuild(false);
            return;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            if key.code == KeyCode::Char('q') {
                self.quit = true;
            }
            return;
        }
        let last = self.rows.len().saturating_sub(1);
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Esc => {
                self.filter.clear();
                self.rebuild(false);
            }
            KeyCode::Tab | KeyCode::Right => self.set_view(self.view.next()),
            KeyCode::BackTab | KeyCode::Left => self.set_view(self.view.previous()),
            KeyCode::Char('p') => self.set_view(View::Pods),
            KeyCode::Char('n') => self.set_view(View::Namespaces),
            KeyCode::Char('u') => self.set_view(View::Users),
            KeyCode::Char('c') => self.set_view(View::Containers),
            KeyCode::Char('o') => self.set_view(View::Processes),
            KeyCode::Char('g') => self.set_view(View::Gpus),
            KeyCode::Char('s') => self.set_sort(self.sort.column.next()),
            KeyCode::Char('r') => {
                self.sort.descending = !self.sort.descending;
                self.rebuild(false);
            }
            KeyCode::Char(d @ '1'..='8') => {
                let i = (d as usize) - ('1' as usize);
                self.set_sort(Column::ALL[i]);
            }
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(last),
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::PageDown => self.selected = (self.selected + 10).min(last),
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(10),
            KeyCode::Home => self.selected = 0,
            KeyCode::End => self.selected = last,
            _ => {}
        }
    }
}

fn push(history: &mut VecDeque<f64>, watts: f64) {
    if history.len() == HISTORY_POINTS {
        history.pop_front();
    }
    history.push_back(watts);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::top::model::tests::{reading, HUB_USERS};

    pub(crate) fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    pub(crate) fn app_with_users() -> App {
        let mut app = App::new(
            "http://n1:28282/metrics".into(),
            2.0,
            View::Pods,
            Sort::default(),
            String::new(),
        );
        app.on_reading(Ok(reading(HUB_USERS)), 1000.0);
        app
    }

    fn names(app: &App) -> Vec<&str> {
        app.rows.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn keys_switch_views_sort_and_filter() {
        let mut app = app_with_users();
        assert_eq!(names(&app), ["jupyter-alice", "jupyter-bob", "coredns-1"]);
        app.on_key(key(KeyCode::Char('1'))); // sort by name, A to Z
        assert_eq!(names(&app), ["coredns-1", "jupyter-alice", "jupyter-bob"]);
        app.on_key(key(KeyCode::Char('1'))); // again: reversed
        assert_eq!(names(&app), ["jupyter-bob", "jupyter-alice", "coredns-1"]);
        app.on_key(key(KeyCode::Char('r')));
        assert_eq!(names(&app), ["coredns-1", "jupyter-alice", "jupyter-bob"]);
        for c in "/bob".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert!(app.editing_filter);
        assert_eq!(names(&app), ["jupyter-bob"]);
        app.on_key(key(KeyCode::Enter));
        assert!(!app.editing_filter);
        app.on_key(key(KeyCode::Char('q'))); // outside the filter, q quits
        assert!(app.quit);

        let mut app = app_with_users();
        app.on_key(key(KeyCode::Char('u')));
        assert_eq!(app.view, View::Users);
        assert_eq!(names(&app), ["alice", "bob", "(not a hub user)"]);
        app.on_key(key(KeyCode::Tab));
        assert_eq!(app.view, View::Containers);
        app.on_key(key(KeyCode::Esc));
        app.on_key(key(KeyCode::Char('?')));
        assert!(app.help);
        app.on_key(key(KeyCode::Char('x')));
        assert!(!app.help && !app.quit);
    }

    #[test]
    fn selection_follows_its_row_and_fetch_errors_keep_the_last_reading() {
        let mut app = app_with_users();
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.selected_row().unwrap().name, "jupyter-bob");
        app.on_key(key(KeyCode::Char('1'))); // resort: bob moves, the selection follows
        assert_eq!(app.selected_row().unwrap().name, "jupyter-bob");
        app.on_key(key(KeyCode::End));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.selected, 2);

        app.on_reading(Err("connection refused".into()), 1001.0);
        app.on_reading(Err("connection refused".into()), 1002.0);
        assert_eq!(
            app.status,
            Status::Failed {
                message: "connection refused".into(),
                attempts: 2
            }
        );
        assert_eq!(app.rows.len(), 3, "the last reading stays on screen");
        app.on_reading(Ok(reading(HUB_USERS)), 1003.0);
        assert_eq!(app.status, Status::Ok);
        assert_eq!(app.node_history.len(), 2);
        assert_eq!(app.selected_history().map(|h| h.len()), Some(2));
    }

    #[test]
    fn a_filter_that_matches_nothing_leaves_no_selection_out_of_range() {
        let mut app = app_with_users();
        app.on_key(key(KeyCode::End));
        for c in "/zzz".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert!(app.rows.is_empty());
        assert_eq!(app.selected, 0);
        assert!(app.selected_row().is_none());
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Up));
        app.on_key(key(KeyCode::Backspace));
        assert_eq!(app.filter, "zz");
    }
}
