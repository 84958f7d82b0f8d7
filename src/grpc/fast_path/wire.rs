//! The fast path's wire format: the request's one length-prefixed message, decoded with
//! tonic's own error texts (the wire test `the_fast_path_answers_bad_requests_with_tonics_own_…`
//! compares them with tonic's answers), and the four fixed response frames.

use bytes::Bytes;
use prost::Message;
use tonic::Status;

use crate::grpc::pb::health::HealthCheckRequest;
use crate::grpc::pb::health::health_check_response::ServingStatus;

/// `HealthCheckResponse { status }`, length-prefixed, uncompressed: four fixed byte strings,
/// so sending one allocates nothing (a unit test checks them against prost).
pub(super) fn framed(status: ServingStatus) -> Bytes {
    Bytes::from_static(match status {
        ServingStatus::Unknown => &[0, 0, 0, 0, 0],
        ServingStatus::Serving => &[0, 0, 0, 0, 2, 0x08, 1],
        ServingStatus::NotServing => &[0, 0, 0, 0, 2, 0x08, 2],
        ServingStatus::ServiceUnknown => &[0, 0, 0, 0, 2, 0x08, 3],
    })
}

/// One uncompressed, length-prefixed message, with tonic's wording for what is wrong.
pub(super) fn decode(bytes: &[u8]) -> Result<HealthCheckRequest, Status> {
    let Some((&flag, rest)) = bytes.split_first() else {
        return Err(Status::internal("Missing request message."));
    };
    if flag != 0 {
        return Err(Status::internal(
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
        ));
    }
    // tonic's words for a frame cut short, and for bytes left over after the one message
    // (the start of a second frame that never completes); the wire test compares them.
    let eof = || Status::internal("Unexpected EOF decoding stream.");
    let (len, message) = rest.split_at_checked(4).ok_or_else(eof)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if message.len() != len {
        return Err(eof());
    }
    // prost's text already reads "failed to decode Protobuf message: …", as tonic sends it.
    HealthCheckRequest::decode(message).map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed_bytes(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn decodes_one_plain_message() {
        let message = HealthCheckRequest {
            service: "readiness".into(),
        }
        .encode_to_vec();
        assert_eq!(
            decode(&framed_bytes(0, &message)).expect("valid").service,
            "readiness"
        );
        assert_eq!(
            decode(&framed_bytes(0, &[]))
                .expect("empty message is service \"\"")
                .service,
            ""
        );
    }

    #[test]
    fn rejects_what_tonic_rejects() {
        let message = HealthCheckRequest {
            service: "x".into(),
        }
        .encode_to_vec();
        let compressed =
            decode(&framed_bytes(1, &message)).expect_err("compressed flag, no encoding");
        assert!(
            compressed
                .message()
                .starts_with("protocol error: received message with compressed-flag")
        );
        assert_eq!(
            decode(&[]).expect_err("no message").code(),
            tonic::Code::Internal
        );
        assert_eq!(
            decode(&[0, 0, 0]).expect_err("truncated prefix").code(),
            tonic::Code::Internal
        );
        let mut long = framed_bytes(0, &message);
        long.push(0);
        assert_eq!(
            decode(&long).expect_err("trailing bytes").code(),
            tonic::Code::Internal
        );
        assert_eq!(
            decode(&framed_bytes(0, &[0xff, 0xff]))
                .expect_err("not protobuf")
                .code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn fixed_frames_are_what_prost_encodes() {
        for status in [
            ServingStatus::Unknown,
            ServingStatus::Serving,
            ServingStatus::NotServing,
            ServingStatus::ServiceUnknown,
        ] {
            let message = crate::grpc::pb::health::HealthCheckResponse {
                status: status as i32,
            }
            .encode_to_vec();
            assert_eq!(framed(status), framed_bytes(0, &message), "{status:?}");
        }
    }
}
