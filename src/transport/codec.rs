//! The protobuf codec of tokend's gRPC services: prost's own, except that a
//! request that does not decode is the caller's fault. tonic-prost answers
//! it with INTERNAL (following gRPC's status-code guide for parse errors),
//! which would count garbage input as a server fault in the logs and
//! `tokend_oauth_errors_total`; tokend answers INVALID_ARGUMENT with the
//! `invalid_request` ErrorInfo, like any malformed request. Wired in by
//! `build.rs` (`codec_path`).

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder};

use crate::oauth::OAuthError;

/// See the module docs.
pub struct ProtoCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(self.0.decoder())
    }
}

/// prost's decoder with decode failures reported as `invalid_request`.
pub struct ProtoDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|_| {
            super::grpc::status(OAuthError::invalid_request(
                "the message is not a valid protobuf encoding of the request",
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
