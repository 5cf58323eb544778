//! One module per subcommand, plus shared flag groups and output helpers.

pub mod frag;
pub mod maxpods;
pub mod plan;
pub mod pool;
pub mod simvpc;
pub mod table;
