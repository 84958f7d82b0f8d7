//! Generated protobuf and tonic code, quarantined: everything else in the crate goes through
//! [`super::convert`]. Public so that Rust clients can use the generated clients.
//!
//! Module nesting mirrors the proto packages, because prost refers across packages by relative
//! paths (`super::super::grpc::health::v1`).
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// `grpc.health.v1`.
pub mod grpc {
    /// `grpc.health.v1`.
    pub mod health {
        /// `grpc.health.v1`.
        pub mod v1 {
            tonic::include_proto!("grpc.health.v1");
        }
    }
}

/// `healthgate.v1`.
pub mod healthgate {
    /// `healthgate.v1`.
    pub mod v1 {
        tonic::include_proto!("healthgate.v1");
    }
}

/// The descriptor set of both protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptors");

pub use grpc::health::v1 as health;
pub use healthgate::v1 as detail;
pub use healthgate::v1 as admin;
