//! The dashboard in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`) against the dashboard on a test database, with the
//! reconciler filling the demo template's pools. Without those two packages the tests say
//! they were skipped and pass; `.ci/run` installs them, so in CI they always run.
//! One test binary per area (cargo links each binary once).

mod dashboard;
mod webdriver;
