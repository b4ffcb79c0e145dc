//! Human durations: "2s", "150ms", "1.5s", "1m", "0".
use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| hint(text))?;
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| hint(text))?;
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        _ => return Err(hint(text)),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 86_400.0 {
        return Err(format!("duration {text:?} is longer than a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn hint(text: &str) -> String {
    format!(
        "{text:?} is not a duration; write a number with a unit: \"150ms\", \"2s\", \"1m\" (or \"0\")"
    )
}

/// Prints like the input format: "150ms", "2s", "1.5s".
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0".into()
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0ms"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_the_rest_with_a_hint() {
        for bad in ["2", "s", "2 s", "-1s", "2h", "", "1e9s", "99999m"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("2").unwrap_err().contains("\"150ms\""));
    }

    #[test]
    fn display_round_trips() {
        for d in ["0", "150ms", "2s", "1.5s"] {
            assert_eq!(display(parse(d).unwrap()), d);
        }
    }
}
