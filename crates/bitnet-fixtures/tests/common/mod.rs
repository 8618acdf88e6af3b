//! Helpers shared by the test binaries.

use bitnet_fixtures::FixtureError;

/// Unwraps, failing the test with the error's message: a missing vocabulary reads
/// "... run `make setup` ...", never a silent pass or a bare `Debug` dump.
#[track_caller]
pub fn must<T>(r: Result<T, FixtureError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}
