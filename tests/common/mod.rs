#[allow(dead_code)]
pub mod agent;
#[allow(dead_code)]
pub mod gateway;
#[allow(dead_code)]
pub mod libsrtp;
#[allow(dead_code)]
pub mod netns;
#[allow(dead_code)]
pub mod pcap;
#[allow(dead_code)]
pub mod uac;
