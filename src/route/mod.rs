pub mod host;
pub mod matcher;
pub mod path;
pub mod weighted;
