//! Agora: an AccessToken2 ("007…") RTC token. No maintained Rust crate builds these, so the
//! published algorithm lives here, checked against Agora's own test vectors and, in CI, against
//! Agora's reference implementation (`agoraiotools`).
//!
//! Layout (all integers little-endian; a "string" is a u16 length then bytes):
//!
//! ```text
//! token   = "007" + base64( zlib( string(signature) + content ) )
//! content = string(app_id) u32(issue_ts) u32(expire) u32(salt) u16(service count) service…
//! rtc     = u16(1) u16(privilege count) (u16 privilege, u32 expire)… string(channel) string(uid)
//! signing = HMAC-SHA256(key = u32(salt), HMAC-SHA256(key = u32(issue_ts), app_certificate))
//! signature = HMAC-SHA256(key = signing, content)
//! ```
//!
//! `expire` values are seconds after `issue_ts`. The uid travels as its decimal string, or the
//! empty string for uid 0 ("any uid").

use std::io::Write;

use base64::Engine as _;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use super::{Engine, EngineConfig, EngineCredentials, EngineError, EngineKind, Grant, all_or_none};

const VERSION: &str = "007";
const SERVICE_RTC: u16 = 1;
/// RTC privileges, as Agora numbers them.
pub const PRIVILEGE_JOIN_CHANNEL: u16 = 1;
pub const PRIVILEGE_PUBLISH_AUDIO: u16 = 2;
pub const PRIVILEGE_PUBLISH_VIDEO: u16 = 3;
pub const PRIVILEGE_PUBLISH_DATA: u16 = 4;

/// Inputs of one RTC token, explicit so that tokens are reproducible in tests.
#[derive(Clone, Debug)]
pub struct RtcToken<'a> {
    pub app_id: &'a str,
    pub app_certificate: &'a str,
    pub channel: &'a str,
    pub uid: u32,
    /// Whether the publish privileges (audio, video, data) are granted beside joining.
    pub publish: bool,
    /// Unix seconds.
    pub issue_ts: u32,
    pub salt: u32,
    /// Seconds after `issue_ts` for the token and its privileges.
    pub expire: u32,
}

impl RtcToken<'_> {
    /// The uncompressed `signature + content` body (what tests compare: zlib output differs
    /// between implementations for the same input).
    pub fn body(&self) -> Vec<u8> {
        let mut privileges = vec![PRIVILEGE_JOIN_CHANNEL];
        if self.publish {
            privileges.extend([
                PRIVILEGE_PUBLISH_AUDIO,
                PRIVILEGE_PUBLISH_VIDEO,
                PRIVILEGE_PUBLISH_DATA,
            ]);
        }
        let mut content = Vec::with_capacity(128);
        put_string(&mut content, self.app_id.as_bytes());
        content.extend(self.issue_ts.to_le_bytes());
        content.extend(self.expire.to_le_bytes());
        content.extend(self.salt.to_le_bytes());
        content.extend(1u16.to_le_bytes());
        content.extend(SERVICE_RTC.to_le_bytes());
        content.extend((privileges.len() as u16).to_le_bytes());
        for privilege in privileges {
            content.extend(privilege.to_le_bytes());
            content.extend(self.expire.to_le_bytes());
        }
        put_string(&mut content, self.channel.as_bytes());
        let uid = if self.uid == 0 {
            String::new()
        } else {
            self.uid.to_string()
        };
        put_string(&mut content, uid.as_bytes());

        let signing = hmac(
            &self.salt.to_le_bytes(),
            &hmac(
                &self.issue_ts.to_le_bytes(),
                self.app_certificate.as_bytes(),
            ),
        );
        let signature = hmac(&signing, &content);
        let mut body = Vec::with_capacity(content.len() + 34);
        put_string(&mut body, &signature);
        body.extend(content);
        body
    }

    /// The token string.
    pub fn build(&self) -> Result<String, EngineError> {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder
            .write_all(&self.body())
            .and_then(|()| encoder.finish())
            .map(|compressed| {
                format!(
                    "{VERSION}{}",
                    base64::engine::general_purpose::STANDARD.encode(compressed)
                )
            })
            .map_err(|e| EngineError::Mint {
                engine: EngineKind::Agora,
                reason: e.to_string(),
            })
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u16).to_le_bytes());
    out.extend(bytes);
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Mints Agora RTC tokens.
pub struct AgoraEngine {
    app_id: String,
    app_certificate: String,
}

impl std::fmt::Debug for AgoraEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgoraEngine")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl AgoraEngine {
    /// Agora ids and certificates are 32 hex digits; anything else would mint tokens Agora
    /// refuses, so it is refused at start-up.
    pub fn new(app_id: String, app_certificate: String) -> Result<Self, EngineError> {
        for (name, value) in [
            ("AGORA_APP_ID", &app_id),
            ("AGORA_APP_CERTIFICATE", &app_certificate),
        ] {
            if value.len() != 32 || !value.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(EngineError::NotConfigured {
                    engine: EngineKind::Agora,
                    missing: format!("{name} (32 hex digits)"),
                });
            }
        }
        Ok(Self {
            app_id,
            app_certificate,
        })
    }

    pub(crate) fn from_config(config: &EngineConfig) -> Result<Option<Self>, EngineError> {
        let settings = all_or_none(
            EngineKind::Agora,
            [
                ("AGORA_APP_ID", &config.agora_app_id),
                ("AGORA_APP_CERTIFICATE", &config.agora_app_certificate),
            ],
        )?;
        settings
            .map(|[app_id, certificate]| Self::new(app_id, certificate))
            .transpose()
    }
}

impl Engine for AgoraEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Agora
    }

    fn credentials(&self, grant: &Grant<'_>) -> Result<EngineCredentials, EngineError> {
        let token = RtcToken {
            app_id: &self.app_id,
            app_certificate: &self.app_certificate,
            channel: grant.room,
            uid: grant.uid,
            publish: grant.can_publish,
            issue_ts: u32::try_from(grant.issued_at).unwrap_or(u32::MAX),
            salt: rand::rng().random_range(1..=99_999_999),
            expire: u32::try_from(grant.ttl.as_secs()).unwrap_or(u32::MAX),
        }
        .build()?;
        Ok(EngineCredentials {
            token,
            url: String::new(),
            app_id: self.app_id.clone(),
        })
    }
}

/// Reads a token back (tests, and diagnosing a token a client reports).
pub mod parse {
    use std::io::Read;

    use base64::Engine as _;

    /// What an RTC token says.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Parsed {
        pub signature: Vec<u8>,
        pub app_id: String,
        pub issue_ts: u32,
        pub expire: u32,
        pub salt: u32,
        pub privileges: Vec<(u16, u32)>,
        pub channel: String,
        pub uid: String,
    }

    /// The decompressed body of a "007" token.
    pub fn body(token: &str) -> Option<Vec<u8>> {
        let compressed = base64::engine::general_purpose::STANDARD
            .decode(token.strip_prefix(super::VERSION)?)
            .ok()?;
        let mut body = Vec::new();
        flate2::read::ZlibDecoder::new(compressed.as_slice())
            .read_to_end(&mut body)
            .ok()?;
        Some(body)
    }

    pub fn parse(token: &str) -> Option<Parsed> {
        let body = body(token)?;
        let mut reader = Reader(&body);
        let signature = reader.string()?.to_vec();
        let app_id = String::from_utf8(reader.string()?.to_vec()).ok()?;
        let issue_ts = reader.u32()?;
        let expire = reader.u32()?;
        let salt = reader.u32()?;
        let services = reader.u16()?;
        if services != 1 || reader.u16()? != super::SERVICE_RTC {
            return None;
        }
        let count = reader.u16()?;
        let privileges = (0..count)
            .map(|_| Some((reader.u16()?, reader.u32()?)))
            .collect::<Option<Vec<_>>>()?;
        let channel = String::from_utf8(reader.string()?.to_vec()).ok()?;
        let uid = String::from_utf8(reader.string()?.to_vec()).ok()?;
        Some(Parsed {
            signature,
            app_id,
            issue_ts,
            expire,
            salt,
            privileges,
            channel,
            uid,
        })
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn u16(&mut self) -> Option<u16> {
            Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn string(&mut self) -> Option<&'a [u8]> {
            let len = usize::from(self.u16()?);
            self.take(len)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
    const CERTIFICATE: &str = "5CFd2fd1755d40ecb72977518be15d3b";
    const CHANNEL: &str = "7d72365eb983485397e3e3f9d460bdda";

    fn vector(uid: u32) -> RtcToken<'static> {
        RtcToken {
            app_id: APP_ID,
            app_certificate: CERTIFICATE,
            channel: CHANNEL,
            uid,
            publish: false,
            issue_ts: 1_111_111,
            salt: 1,
            expire: 600,
        }
    }

    /// Agora's published vectors (AgoraIO/Tools, AccessToken2Test.py, `test_service_rtc` and
    /// `test_service_rtc_uid_0`), compared decompressed.
    #[test]
    fn agora_reference_vectors() {
        let expected = "007eJxTYBBbsMMnKq7p9Hf/HcIX5kce9b518kCiQgSr5Zrp4X1Tu6UUGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiVwMRhYWRsYmhkbmxgDCaiTj";
        assert_eq!(vector(2_882_341_273).body(), parse::body(expected).unwrap());
        let expected_uid_0 = "007eJxTYLhzZP08Lxa1Pg57+TcXb/3cZ3wi4V6kbpbOog0G2dOYk20UGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiQwMADacImo=";
        assert_eq!(vector(0).body(), parse::body(expected_uid_0).unwrap());
    }

    #[test]
    fn our_tokens_parse_back() {
        let token = RtcToken {
            publish: true,
            ..vector(42)
        }
        .build()
        .unwrap();
        assert!(token.starts_with("007"));
        let parsed = parse::parse(&token).unwrap();
        assert_eq!(parsed.app_id, APP_ID);
        assert_eq!(parsed.channel, CHANNEL);
        assert_eq!(parsed.uid, "42");
        assert_eq!(parsed.expire, 600);
        assert_eq!(
            parsed.privileges,
            vec![(1, 600), (2, 600), (3, 600), (4, 600)]
        );
        assert_eq!(parsed.signature.len(), 32);
        assert_eq!(parse::parse(&vector(0).build().unwrap()).unwrap().uid, "");
    }

    #[test]
    fn listeners_only_join() {
        let engine = AgoraEngine::new(APP_ID.into(), CERTIFICATE.into()).unwrap();
        let credentials = engine
            .credentials(&Grant {
                room: "vc_room",
                identity: "alice",
                uid: 7,
                display_name: "Alice",
                can_publish: false,
                can_subscribe: true,
                issued_at: 1_700_000_000,
                ttl: Duration::from_secs(3600),
            })
            .unwrap();
        assert_eq!(credentials.app_id, APP_ID);
        let parsed = parse::parse(&credentials.token).unwrap();
        assert_eq!(parsed.privileges, vec![(PRIVILEGE_JOIN_CHANNEL, 3600)]);
        assert_eq!(parsed.issue_ts, 1_700_000_000);
        assert_eq!(parsed.uid, "7");
        assert_eq!(parsed.channel, "vc_room");
    }

    #[test]
    fn settings_must_be_complete_and_well_formed() {
        let mut config = crate::engine::tests::config();
        config.agora_app_id = Some(APP_ID.into());
        let error = AgoraEngine::from_config(&config).unwrap_err().to_string();
        assert!(error.contains("AGORA_APP_CERTIFICATE"), "{error}");
        config.agora_app_certificate = Some("not-hex".into());
        let error = AgoraEngine::from_config(&config).unwrap_err().to_string();
        assert!(error.contains("32 hex digits"), "{error}");
        config.agora_app_certificate = Some(CERTIFICATE.into());
        assert!(AgoraEngine::from_config(&config).unwrap().is_some());
    }
}
