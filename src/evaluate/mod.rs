//! Regional performance evaluation (issue 11), computed from the shared log: how each province
//! and issuing authority keeps the credit rules. Pure: the clock and the working-day calendar are
//! inputs. So far: the working-day calendar (`calendar`).

pub mod calendar;

pub use calendar::{Calendar, CalendarError};
