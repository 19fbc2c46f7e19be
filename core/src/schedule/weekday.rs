use chrono::Weekday;
use serde::{Deserialize, Serialize};

/// A day name as it appears in replay files and templates (`"mon"` .. `"sun"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DayName {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl DayName {
    pub const ALL: [DayName; 7] = [
        DayName::Mon,
        DayName::Tue,
        DayName::Wed,
        DayName::Thu,
        DayName::Fri,
        DayName::Sat,
        DayName::Sun,
    ];

    pub fn weekday(self) -> Weekday {
        match self {
            DayName::Mon => Weekday::Mon,
            DayName::Tue => Weekday::Tue,
            DayName::Wed => Weekday::Wed,
            DayName::Thu => Weekday::Thu,
            DayName::Fri => Weekday::Fri,
            DayName::Sat => Weekday::Sat,
            DayName::Sun => Weekday::Sun,
        }
    }

    pub fn from_weekday(day: Weekday) -> DayName {
        match day {
            Weekday::Mon => DayName::Mon,
            Weekday::Tue => DayName::Tue,
            Weekday::Wed => DayName::Wed,
            Weekday::Thu => DayName::Thu,
            Weekday::Fri => DayName::Fri,
            Weekday::Sat => DayName::Sat,
            Weekday::Sun => DayName::Sun,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DayName::Mon => "mon",
            DayName::Tue => "tue",
            DayName::Wed => "wed",
            DayName::Thu => "thu",
            DayName::Fri => "fri",
            DayName::Sat => "sat",
            DayName::Sun => "sun",
        }
    }
}

impl std::str::FromStr for DayName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DayName::ALL.into_iter().find(|day| day.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            format!("unknown day {s:?}, expected one of mon, tue, wed, thu, fri, sat, sun")
        })
    }
}

/// A set of allowed weekdays (e.g. a template's `autostart_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WeekdaySet(u8);

impl WeekdaySet {
    pub const EVERY_DAY: WeekdaySet = WeekdaySet(0b111_1111);

    pub fn from_days(days: &[DayName]) -> WeekdaySet {
        WeekdaySet(days.iter().fold(0, |bits, day| bits | Self::bit(day.weekday())))
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & Self::bit(day) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn bit(day: Weekday) -> u8 {
        1 << day.num_days_from_monday()
    }
}
