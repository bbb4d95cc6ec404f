//! Regional performance evaluation (issue 11), computed from the shared log: how each province
//! and issuing authority keeps the credit rules. Pure: the clock and the working-day calendar are
//! inputs; the node's side (`delivery::evaluation`) reads the merged view's postings and the
//! journal frames they point at and feeds them to the `Evaluator` here.
//!
//! - `calendar`: working days (weekends, holidays, make-up days), from `config/calendar-*.toml`;
//! - `facts`: what one stored operation says, read without building the whole record;
//! - `timeliness`: the 7-working-day rule per origin and issuing authority;
//! - `report`: every indicator, the report value whose JSON is byte-identical across nodes that
//!   hold the same entries, and what is signed;
//! - `render`: table, CSV and one-file HTML with inline SVG charts.

pub mod arrivals;
pub mod calendar;
pub mod facts;
pub mod render;
pub mod report;
pub mod timeliness;

pub use calendar::{Calendar, CalendarError};
pub use report::{Evaluator, Observed, Report};

/// The official calendars this build knows (the node uses them unless `[evaluate] calendar_dir`
/// names another directory).
pub const BUILT_IN_CALENDARS: &[(&str, &str)] = &[
    ("calendar-2024.toml", include_str!("../../config/calendar-2024.toml")),
    ("calendar-2025.toml", include_str!("../../config/calendar-2025.toml")),
    ("calendar-2026.toml", include_str!("../../config/calendar-2026.toml")),
];

/// The built-in calendar.
pub fn built_in_calendar() -> Result<Calendar, CalendarError> {
    let mut c = Calendar::default();
    for (file, text) in BUILT_IN_CALENDARS {
        c.add_year(file, text)?;
    }
    Ok(c)
}
