pub mod core;
pub mod media;
pub mod number;
pub mod tone;
