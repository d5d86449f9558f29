//! Value types of `DOMAIN.md` §2, the email and slug patterns, and access codes (§1.5).

use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use regex::Regex;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Money: an exact decimal, serialized as a decimal string (`"45.30"`).
pub type Money = Decimal;

/// Rounds to 2 decimal places, midpoint to even (banker's rounding): 0.125 → 0.12, 0.135 → 0.14.
pub fn round2(amount: Money) -> Money {
    amount.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
}

/// A quantity of one seat type: requested seats, reserved seats, or a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeatQuantity {
    /// The seat type.
    pub seat_type: Uuid,
    /// How many (may be negative for a delta).
    pub quantity: i32,
}

impl SeatQuantity {
    /// `quantity` seats of `seat_type`.
    pub fn new(seat_type: Uuid, quantity: i32) -> Self {
        Self { seat_type, quantity }
    }
}

/// The command-side input to an order; converts one-to-one into a [`SeatQuantity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// The seat type.
    pub seat_type: Uuid,
    /// How many seats.
    pub quantity: i32,
}

impl From<OrderItem> for SeatQuantity {
    fn from(item: OrderItem) -> Self {
        Self::new(item.seat_type, item.quantity)
    }
}

/// A priced line of an order, serialized with its variant tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderLine {
    /// Seats of one type.
    Seat(SeatOrderLine),
}

impl OrderLine {
    /// The line's total, whatever its kind.
    pub fn line_total(&self) -> Money {
        match self {
            Self::Seat(line) => line.line_total,
        }
    }
}

/// Seats of one type, priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatOrderLine {
    /// The seat type.
    pub seat_type: Uuid,
    /// The seat type's price, not rounded.
    pub unit_price: Money,
    /// How many seats.
    pub quantity: i32,
    /// `round2(unit_price × quantity)`.
    pub line_total: Money,
}

/// An order's lines and total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderTotal {
    /// One line per requested seat type, in request order.
    pub lines: Vec<OrderLine>,
    /// The sum of the (rounded) line totals.
    pub total: Money,
}

/// Personal details of a registrant or an attendee. Equality compares the email
/// case-insensitively and the names exactly; absent equals only absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PersonalInfo {
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Email address.
    pub email: Option<String>,
}

impl PersonalInfo {
    /// Details with all three fields present.
    pub fn new(
        first_name: impl Into<String>,
        last_name: impl Into<String>,
        email: impl Into<String>,
    ) -> Self {
        Self {
            first_name: Some(first_name.into()),
            last_name: Some(last_name.into()),
            email: Some(email.into()),
        }
    }

    fn folded_email(&self) -> Option<String> {
        self.email.as_deref().map(str::to_lowercase)
    }
}

impl PartialEq for PersonalInfo {
    fn eq(&self, other: &Self) -> bool {
        self.first_name == other.first_name
            && self.last_name == other.last_name
            && self.folded_email() == other.folded_email()
    }
}

impl Eq for PersonalInfo {}

impl Hash for PersonalInfo {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.first_name.hash(state);
        self.last_name.hash(state);
        self.folded_email().hash(state);
    }
}

/// A position of a seat-assignments aggregate and its seat type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatAssignmentInfo {
    /// The position, from 0.
    pub position: i32,
    /// The seat type at that position.
    pub seat_type: Uuid,
}

/// The owner of a conference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Full name.
    pub name: String,
    /// Email address.
    pub email: String,
}

/// The message of a failed email check, exactly as `DOMAIN.md` §2 gives it.
pub const INVALID_EMAIL: &str = "The provided email address is not valid.";

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[\w-]+(\.?[\w-])*@[\w-]+(\.[\w-]+)+$").expect("the email pattern compiles")
});

static SLUG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\w+$").expect("the slug pattern compiles"));

/// Whether `email` matches the email pattern of `DOMAIN.md` §2 (Unicode word characters).
pub fn is_valid_email(email: &str) -> bool {
    EMAIL.is_match(email)
}

/// Whether `slug` is one or more Unicode word characters (`^\w+$`).
pub fn is_valid_slug(slug: &str) -> bool {
    SLUG.is_match(slug)
}

/// The alphabet of access codes: no `I`, `L`, `O` or `0`.
pub const ACCESS_CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKMNPQRSTUVWXYZ123456789";

/// The length of order and conference access codes.
pub const ACCESS_CODE_LENGTH: usize = 6;

/// A new access code: 6 characters drawn uniformly and independently from
/// [`ACCESS_CODE_ALPHABET`] with the operating system's secure generator (the code is a secret).
///
/// # Panics
/// If the operating system has no random source, which no supported platform lacks.
pub fn new_access_code() -> String {
    let mut bytes = [0u8; ACCESS_CODE_LENGTH];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    // 256 is a multiple of 32, so `byte % 32` is uniform.
    bytes
        .iter()
        .map(|b| ACCESS_CODE_ALPHABET[usize::from(b % 32)] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::str::FromStr;

    use super::*;

    fn money(s: &str) -> Money {
        Money::from_str(s).unwrap()
    }

    #[test]
    fn round2_is_bankers_rounding() {
        assert_eq!(round2(money("0.125")), money("0.12"));
        assert_eq!(round2(money("0.135")), money("0.14"));
        assert_eq!(round2(money("0.126")), money("0.13"));
        assert_eq!(round2(money("-0.125")), money("-0.12"));
    }

    #[test]
    fn money_travels_as_a_decimal_string() {
        let line = OrderLine::Seat(SeatOrderLine {
            seat_type: Uuid::nil(),
            unit_price: money("45.30"),
            quantity: 2,
            line_total: money("90.60"),
        });
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["Seat"]["unit_price"], "45.30");
        assert_eq!(serde_json::from_value::<OrderLine>(json).unwrap(), line);
    }

    #[test]
    fn personal_info_compares_email_case_insensitively_and_names_exactly() {
        let ada = PersonalInfo::new("Ada", "Lovelace", "ada@example.org");
        assert_eq!(ada, PersonalInfo::new("Ada", "Lovelace", "ADA@Example.ORG"));
        assert_ne!(ada, PersonalInfo::new("ada", "Lovelace", "ada@example.org"));
        let unicode = PersonalInfo::new("Ö", "Ü", "ÖLE@x.de");
        assert_eq!(unicode, PersonalInfo::new("Ö", "Ü", "öle@x.de"));
        assert_eq!(PersonalInfo::default(), PersonalInfo::default());
        let no_email = PersonalInfo {
            email: None,
            ..ada.clone()
        };
        assert_ne!(ada, no_email);
        let set: HashSet<_> = [ada, PersonalInfo::new("Ada", "Lovelace", "ADA@EXAMPLE.ORG")].into();
        assert_eq!(set.len(), 1, "Hash agrees with equality");
    }

    #[test]
    fn email_pattern() {
        for good in [
            "a@b.c",
            "first.last@example.co.uk",
            "x-y_z@do-main.org",
            "jürgen@bücher.de",
        ] {
            assert!(is_valid_email(good), "{good}");
        }
        for bad in [
            "", "a@b", "a..b@c.d", ".a@b.c", "a.@b.c", "a@b..c", "a b@c.d", "a@b.c.", "@b.c", "a@@b.c",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn slug_pattern() {
        assert!(is_valid_slug("rustconf_2026"));
        assert!(!is_valid_slug("rust-conf"));
        assert!(!is_valid_slug(""));
    }

    #[test]
    fn access_codes_use_the_alphabet() {
        let codes: HashSet<String> = (0..200).map(|_| new_access_code()).collect();
        assert!(codes.len() > 190, "codes are random");
        for code in &codes {
            assert_eq!(code.len(), ACCESS_CODE_LENGTH);
            assert!(code.bytes().all(|c| ACCESS_CODE_ALPHABET.contains(&c)), "{code}");
        }
    }
}
