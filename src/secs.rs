//! Seconds on the command line (`--idle-timeout`, `--duration`,
//! `--stall-timeout`): a plain number, fractions allowed, that the clock
//! can hold. A leaf: both the server's and the load generator's flags use
//! it, and it imports nothing from the crate.
//!
//! clap reads `-1` as a flag unless the argument says otherwise, so an
//! argument parsed here should carry `allow_negative_numbers = true`:
//! then `-1` reaches [`parse_secs`] and gets a clear message instead of
//! "unexpected argument".

use std::fmt;
use std::time::Duration;

/// The longest duration accepted: about 100 years. Far beyond any run or
/// timeout, and far inside what `Instant + Duration` can hold, so adding
/// it to the clock never overflows (which would panic).
pub(crate) const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Why a number of seconds was refused. Each message reads after clap's
/// `invalid value '…' for '--flag <SECS>':`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SecsError {
    /// Not a number at all.
    NotANumber,
    /// Below zero.
    Negative,
    /// NaN or infinite.
    NotFinite,
    /// More than [`MAX`].
    TooLarge,
    /// Below the least the flag accepts (see [`at_least`]).
    TooSmall(Duration),
}

impl fmt::Display for SecsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecsError::NotANumber => f.write_str("not a number of seconds"),
            SecsError::Negative => f.write_str("seconds cannot be negative"),
            SecsError::NotFinite => {
                f.write_str("seconds must be a finite number")
            }
            SecsError::TooLarge => {
                write!(
                    f,
                    "must be at most {} s (about 100 years)",
                    MAX.as_secs()
                )
            }
            SecsError::TooSmall(min) => {
                write!(f, "must be at least {} s", min.as_secs_f64())
            }
        }
    }
}

impl std::error::Error for SecsError {}

/// Parses a non-negative, finite number of seconds up to [`MAX`],
/// fractions allowed (`1.5`, `0.25`, `1e3`).
pub(crate) fn parse_secs(text: &str) -> Result<Duration, SecsError> {
    let secs: f64 = text.trim().parse().map_err(|_| SecsError::NotANumber)?;
    match secs {
        s if s.is_nan() || s.is_infinite() => Err(SecsError::NotFinite),
        // `-0` is zero, not a negative number.
        s if s < 0.0 => Err(SecsError::Negative),
        s if s > MAX.as_secs_f64() => Err(SecsError::TooLarge),
        s => Ok(Duration::from_secs_f64(s)),
    }
}

/// A parser for a flag that needs at least `min` (as clap's
/// `value_parser = at_least(…)`).
pub(crate) fn at_least(
    min: Duration,
) -> impl Fn(&str) -> Result<Duration, SecsError> + Clone + Send + Sync {
    move |text| match parse_secs(text)? {
        d if d < min => Err(SecsError::TooSmall(min)),
        d => Ok(d),
    }
}

/// A parser for a timeout where 0 means "never" and anything else must
/// be at least `min`: a timeout of a few microseconds would fire before
/// the first byte could be read.
pub(crate) fn zero_or_at_least(
    min: Duration,
) -> impl Fn(&str) -> Result<Duration, SecsError> + Clone + Send + Sync {
    move |text| {
        let d = parse_secs(text)?;
        // `1e-10` is not zero, even though it rounds to zero nanoseconds.
        let asked = text.trim().parse::<f64>().is_ok_and(|s| s > 0.0);
        match asked && d < min {
            true => Err(SecsError::TooSmall(min)),
            false => Ok(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_with_fractions() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert_eq!(parse_secs("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_secs("1e3"), Ok(Duration::from_secs(1000)));
        assert_eq!(parse_secs(&MAX.as_secs().to_string()), Ok(MAX));
    }

    #[test]
    fn nonsense_is_refused_with_its_own_reason() {
        assert_eq!(parse_secs("soon"), Err(SecsError::NotANumber));
        assert_eq!(parse_secs(""), Err(SecsError::NotANumber));
        assert_eq!(parse_secs("-1"), Err(SecsError::Negative));
        assert_eq!(parse_secs("-1e-9"), Err(SecsError::Negative));
        assert_eq!(parse_secs("NaN"), Err(SecsError::NotFinite));
        assert_eq!(parse_secs("inf"), Err(SecsError::NotFinite));
        assert_eq!(parse_secs("-inf"), Err(SecsError::NotFinite));
        assert_eq!(parse_secs("1e19"), Err(SecsError::TooLarge));
        assert_eq!(parse_secs("1e30"), Err(SecsError::TooLarge));
    }

    #[test]
    fn the_longest_duration_fits_the_clock() {
        let now = std::time::Instant::now();
        assert!(now.checked_add(MAX).is_some());
        assert!(now.checked_add(MAX * 2).is_some(), "room for sums");
    }

    #[test]
    fn zero_means_never_and_the_rest_has_a_floor() {
        let parse = zero_or_at_least(Duration::from_millis(1));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0.001"), Ok(Duration::from_millis(1)));
        assert!(matches!(parse("0.0005"), Err(SecsError::TooSmall(_))));
        assert!(matches!(parse("1e-10"), Err(SecsError::TooSmall(_))));
        assert_eq!(parse("-1"), Err(SecsError::Negative));
    }

    #[test]
    fn a_lower_bound_is_enforced() {
        let parse = at_least(Duration::from_millis(1));
        assert_eq!(parse("0.5"), Ok(Duration::from_millis(500)));
        let too_small = parse("0").unwrap_err();
        assert_eq!(too_small, SecsError::TooSmall(Duration::from_millis(1)));
        assert_eq!(too_small.to_string(), "must be at least 0.001 s");
        assert_eq!(parse("-1"), Err(SecsError::Negative));
    }
}
