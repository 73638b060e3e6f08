pub mod agent;
pub mod gateway;
pub mod libsrtp;
pub mod netns;
pub mod pcap;
pub mod uac;
