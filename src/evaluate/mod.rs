//! Regional performance evaluation (issue 11), computed from the shared log: how each province
//! and issuing authority keeps the credit rules. Pure: the clock and the working-day calendar are
//! inputs. So far: the working-day calendar (`calendar`) and the timeliness indicator
//! (`timeliness`), not yet wired to the merged view, an RPC or the CLI.

pub mod calendar;
pub mod timeliness;

pub use calendar::{Calendar, CalendarError};
