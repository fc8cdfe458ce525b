//! How the gateway proves itself to the handshake service: the bearer credential attached to
//! every call (the unary [`crate::upstream`] calls and the [`crate::link`] stream alike), and
//! the TLS settings of the channel when the service's URL is `https://`.
//!
//! The service admits a gateway credential to `GatewayLink` and the `Handshake` operations
//! only (docs/security.md, "Internal gRPC authentication"). The header value is built once: a
//! call only clones it (a reference count) into its metadata.

use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::GatewayConfig;
use crate::transport::Transport;

/// The way to the service ([`Transport`]) with this gateway's credential on every call.
pub type ToService = InterceptedService<Transport, Credential>;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("VIDEOCHAT_GRPC_TOKEN cannot be sent in a header (it must be printable ASCII)")]
    BadToken,
    #[error(
        "VIDEOCHAT_GRPC_TLS_CLIENT_CERT_FILE and VIDEOCHAT_GRPC_TLS_CLIENT_KEY_FILE go together"
    )]
    ClientIdentityIncomplete,
    #[error("cannot read {setting} ({path}): {source}")]
    File {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `authorization: Bearer <VIDEOCHAT_GRPC_TOKEN>` on every call; nothing when unset (a service
/// with `VIDEOCHAT_GRPC_AUTH=none`).
#[derive(Clone)]
pub struct Credential {
    header: Option<MetadataValue<Ascii>>,
}

impl Credential {
    pub fn from_config(config: &GatewayConfig) -> Result<Self, CredentialError> {
        let header = match config.grpc_token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| CredentialError::BadToken)?,
            ),
        };
        Ok(Self { header })
    }

    pub fn is_set(&self) -> bool {
        self.header.is_some()
    }

    /// The transport with this credential on every call.
    pub fn attach(&self, transport: Transport) -> ToService {
        InterceptedService::new(transport, self.clone())
    }
}

impl Interceptor for Credential {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// The channel's TLS settings: `None` for an `http://` service URL. For `https://`, the
/// service's certificate is checked against `VIDEOCHAT_GRPC_TLS_CA_FILE` (the system's roots
/// are not used: internal certificates come from an internal CA), and the gateway presents its
/// own certificate when the service asks for one (mutual TLS).
pub fn tls(config: &GatewayConfig) -> Result<Option<ClientTlsConfig>, CredentialError> {
    if !config.handshake_url.starts_with("https://") {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &config.grpc_tls_ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(
            "VIDEOCHAT_GRPC_TLS_CA_FILE",
            ca,
        )?));
    }
    match (
        &config.grpc_tls_client_cert_file,
        &config.grpc_tls_client_key_file,
    ) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read("VIDEOCHAT_GRPC_TLS_CLIENT_CERT_FILE", cert)?,
                read("VIDEOCHAT_GRPC_TLS_CLIENT_KEY_FILE", key)?,
            ));
        }
        _ => return Err(CredentialError::ClientIdentityIncomplete),
    }
    // Replicas are dialled by address (a DNS name stands for all it resolves to), so the name
    // their certificates carry is said here: the setting, else the URL's first host.
    let domain = config.grpc_tls_domain.clone().or_else(|| {
        crate::endpoints::parse(&config.handshake_url)
            .ok()
            .and_then(|targets| targets.first().map(|t| t.host.clone()))
    });
    if let Some(domain) = domain {
        tls = tls.domain_name(domain);
    }
    Ok(Some(tls))
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|source| CredentialError::File {
        setting,
        path: path.to_owned(),
        source,
    })
}
