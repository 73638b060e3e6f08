pub mod agent;
pub mod browser;
pub mod gateway;
pub mod libsrtp;
pub mod netns;
pub mod pcap;
pub mod uac;

/// A weekday, as the configuration names it, three days from today in
/// UTC: today in no time zone on Earth, so working hours set to it make
/// "now" off hours wherever the test says they are.
pub fn not_today() -> &'static str {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .weekday()
        .to_monday_zero_offset() as usize;
    DAYS[(today + 3) % 7]
}
