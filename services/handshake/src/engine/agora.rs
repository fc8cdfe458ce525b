//! Agora: an AccessToken2 ("007…") RTC token. No maintained Rust crate builds these, so the
//! published algorithm (Agora's reference implementation, `AccessToken2` in AgoraIO/Tools) is
//! implemented here, checked against Agora's own test vectors and, in the cross-check, against
//! Agora's reference implementation (`agoraiotools`).
//!
//! Layout (all integers little-endian; a "string" is a u16 length then its bytes):
//!
//! ```text
//! token     = "007" + base64( zlib( string(signature) + content ) )
//! content   = string(app_id) u32(issue_ts) u32(expire) u32(salt) u16(service count) service…
//! rtc       = u16(1) u16(privilege count) (u16 privilege, u32 expire)… string(channel) string(uid)
//! signing   = HMAC-SHA256(key = u32(salt), HMAC-SHA256(key = u32(issue_ts), app_certificate))
//! signature = HMAC-SHA256(key = signing, content)
//! ```
//!
//! `expire` values are seconds after `issue_ts`. Privileges are written in ascending order. The
//! uid travels as its decimal string, or as the empty string for uid 0, which Agora reads as
//! "any uid".
//!
//! zlib output is not canonical (two zlib implementations may compress the same bytes
//! differently), so tokens are compared by their decompressed body, never as strings.

use std::io::Write;

use base64::Engine as _;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use super::{Engine, EngineConfig, EngineCredentials, EngineError, EngineKind, Grant, all_or_none};

/// The AccessToken2 version prefix.
const VERSION: &str = "007";
/// Agora's service number for RTC (audio/video channels).
const SERVICE_RTC: u16 = 1;

/// RTC privileges, as Agora numbers them.
pub const PRIVILEGE_JOIN_CHANNEL: u16 = 1;
pub const PRIVILEGE_PUBLISH_AUDIO: u16 = 2;
pub const PRIVILEGE_PUBLISH_VIDEO: u16 = 3;
pub const PRIVILEGE_PUBLISH_DATA: u16 = 4;

/// Agora's reference builder draws the salt from this range.
const SALT_RANGE: std::ops::RangeInclusive<u32> = 1..=99_999_999;

/// Inputs of one RTC token, all explicit (timestamp and salt included) so that a token can be
/// rebuilt byte for byte: by tests, and by the cross-check against Agora's own builder.
#[derive(Clone)]
pub struct RtcToken<'a> {
    /// Project App ID (32 hex digits).
    pub app_id: &'a str,
    /// Project App Certificate (32 hex digits): the signing secret.
    pub app_certificate: &'a str,
    /// Channel name: 1 to 63 bytes of Agora's channel-name alphabet.
    pub channel: &'a str,
    /// RTC uid; 0 means "any uid" (written as the empty string).
    pub uid: u32,
    /// Grants the publish privileges (audio, video, data) beside joining. This is what Agora's
    /// `RtcTokenBuilder2` does for `Role_Publisher`; a subscriber only joins.
    pub publish: bool,
    /// Unix seconds at which the token is issued.
    pub issue_ts: u32,
    /// Random salt, so two tokens issued in the same second differ.
    pub salt: u32,
    /// Seconds after `issue_ts` at which the token and each of its privileges expire.
    pub expire: u32,
}

impl std::fmt::Debug for RtcToken<'_> {
    /// The certificate is a secret; everything else is in the token anyway.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcToken")
            .field("app_id", &self.app_id)
            .field("channel", &self.channel)
            .field("uid", &self.uid)
            .field("publish", &self.publish)
            .field("issue_ts", &self.issue_ts)
            .field("salt", &self.salt)
            .field("expire", &self.expire)
            .finish_non_exhaustive()
    }
}

impl RtcToken<'_> {
    /// The privileges this token grants, in the ascending order Agora writes them.
    pub fn privileges(&self) -> &'static [u16] {
        if self.publish {
            &[
                PRIVILEGE_JOIN_CHANNEL,
                PRIVILEGE_PUBLISH_AUDIO,
                PRIVILEGE_PUBLISH_VIDEO,
                PRIVILEGE_PUBLISH_DATA,
            ]
        } else {
            &[PRIVILEGE_JOIN_CHANNEL]
        }
    }

    /// The uncompressed `string(signature) + content` body: what tests and the cross-check
    /// compare, since zlib output differs between implementations for the same input.
    pub fn body(&self) -> Result<Vec<u8>, EngineError> {
        check_hex32("app id", self.app_id).map_err(mint_error)?;
        check_hex32("app certificate", self.app_certificate).map_err(mint_error)?;
        check_channel(self.channel).map_err(mint_error)?;

        let privileges = self.privileges();
        let uid = if self.uid == 0 {
            String::new()
        } else {
            self.uid.to_string()
        };
        let mut content = Vec::with_capacity(128);
        put_string(&mut content, self.app_id.as_bytes())?;
        content.extend(self.issue_ts.to_le_bytes());
        content.extend(self.expire.to_le_bytes());
        content.extend(self.salt.to_le_bytes());
        content.extend(1u16.to_le_bytes()); // one service: RTC
        content.extend(SERVICE_RTC.to_le_bytes());
        put_len(&mut content, privileges.len())?;
        for privilege in privileges {
            content.extend(privilege.to_le_bytes());
            content.extend(self.expire.to_le_bytes());
        }
        put_string(&mut content, self.channel.as_bytes())?;
        put_string(&mut content, uid.as_bytes())?;

        let signing = hmac_sha256(
            &self.salt.to_le_bytes(),
            &hmac_sha256(
                &self.issue_ts.to_le_bytes(),
                self.app_certificate.as_bytes(),
            )?,
        )?;
        let signature = hmac_sha256(&signing, &content)?;
        let mut body = Vec::with_capacity(2 + signature.len() + content.len());
        put_string(&mut body, &signature)?;
        body.extend(content);
        Ok(body)
    }

    /// The token string, `007` + base64(zlib(body)).
    pub fn build(&self) -> Result<String, EngineError> {
        let body = self.body()?;
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder
            .write_all(&body)
            .and_then(|()| encoder.finish())
            .map(|compressed| {
                let encoded = base64::engine::general_purpose::STANDARD.encode(compressed);
                format!("{VERSION}{encoded}")
            })
            .map_err(|e| mint_error(format!("zlib: {e}")))
    }
}

fn mint_error(reason: impl Into<String>) -> EngineError {
    EngineError::Mint {
        engine: EngineKind::Agora,
        reason: reason.into(),
    }
}

/// App ids and certificates are 32 hex digits; Agora's reference builder refuses anything else
/// (it returns an empty token), and Agora's servers would refuse the token.
fn check_hex32(name: &str, value: &str) -> Result<(), String> {
    if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("the {name} must be 32 hex digits"))
    }
}

/// Agora's channel names: fewer than 64 bytes of letters, digits, space and
/// `!#$%&()+-:;<=.>?@[]^_{}|~,`. A token for any other name is one no SDK can join with, so it is
/// refused here rather than by a client later.
fn check_channel(channel: &str) -> Result<(), String> {
    const PUNCTUATION: &[u8] = b" !#$%&()+-:;<=.>?@[]^_{}|~,";
    let valid = !channel.is_empty()
        && channel.len() < 64
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || PUNCTUATION.contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "channel name {channel:?} is not a valid Agora channel name (1 to 63 bytes of \
             letters, digits, space and !#$%&()+-:;<=.>?@[]^_{{}}|~,)"
        ))
    }
}

/// A u16 length prefix; every length in a token fits, but a silent truncation would mint a
/// corrupt token, so it is checked.
fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), EngineError> {
    let len = u16::try_from(len).map_err(|_| mint_error(format!("{len} is too long")))?;
    out.extend(len.to_le_bytes());
    Ok(())
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EngineError> {
    put_len(out, bytes.len())?;
    out.extend(bytes);
    Ok(())
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Result<Vec<u8>, EngineError> {
    // HMAC takes keys of any length, so this error never happens; it is still not unwrapped.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|e| mint_error(e.to_string()))?;
    mac.update(message);
    Ok(mac.finalize().into_bytes().to_vec())
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
    /// Checks both settings are 32 hex digits: anything else would mint tokens Agora refuses,
    /// so it is refused at start-up, naming the setting.
    pub fn new(app_id: String, app_certificate: String) -> Result<Self, EngineError> {
        for (name, value) in [
            ("AGORA_APP_ID", &app_id),
            ("AGORA_APP_CERTIFICATE", &app_certificate),
        ] {
            if check_hex32(name, value).is_err() {
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
        // AccessToken2 has u32 seconds; saturating would mint a token with a wrong time.
        let issue_ts = u32::try_from(grant.issued_at).map_err(|_| {
            mint_error(format!(
                "issue time {} does not fit AccessToken2's 32-bit timestamp",
                grant.issued_at
            ))
        })?;
        let expire = u32::try_from(grant.ttl.as_secs()).map_err(|_| {
            mint_error(format!(
                "lifetime {} s does not fit AccessToken2's 32-bit expiry",
                grant.ttl.as_secs()
            ))
        })?;
        let token = RtcToken {
            app_id: &self.app_id,
            app_certificate: &self.app_certificate,
            channel: grant.room,
            uid: grant.uid,
            publish: grant.can_publish,
            issue_ts,
            salt: rand::rng().random_range(SALT_RANGE),
            expire,
        }
        .build()?;
        Ok(EngineCredentials {
            token,
            url: String::new(),
            app_id: self.app_id.clone(),
        })
    }
}

/// Reads an RTC token back: for tests, and for diagnosing a token a client reports. It reads
/// tokens with the RTC service only (the ones this engine mints) and does not check the
/// signature; rebuild the [`RtcToken`] from the parsed fields and compare bodies for that.
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
        /// (privilege, expire) pairs in token order.
        pub privileges: Vec<(u16, u32)>,
        pub channel: String,
        /// The uid as the token carries it: decimal, or empty for "any uid".
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

    /// The fields of an RTC-only token, or `None` for anything else (or trailing bytes).
    pub fn parse(token: &str) -> Option<Parsed> {
        let body = body(token)?;
        let mut reader = Reader(&body);
        let signature = reader.string()?.to_vec();
        let app_id = reader.utf8()?;
        let issue_ts = reader.u32()?;
        let expire = reader.u32()?;
        let salt = reader.u32()?;
        if reader.u16()? != 1 || reader.u16()? != super::SERVICE_RTC {
            return None;
        }
        let count = reader.u16()?;
        let privileges = (0..count)
            .map(|_| Some((reader.u16()?, reader.u32()?)))
            .collect::<Option<Vec<_>>>()?;
        let channel = reader.utf8()?;
        let uid = reader.utf8()?;
        if !reader.0.is_empty() {
            return None;
        }
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

    /// A cursor over a token body.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_first_chunk::<N>()?;
            self.0 = rest;
            Some(*head)
        }

        fn u16(&mut self) -> Option<u16> {
            self.take().map(u16::from_le_bytes)
        }

        fn u32(&mut self) -> Option<u32> {
            self.take().map(u32::from_le_bytes)
        }

        fn string(&mut self) -> Option<&'a [u8]> {
            let len = usize::from(self.u16()?);
            let (head, rest) = self.0.split_at_checked(len)?;
            self.0 = rest;
            Some(head)
        }

        fn utf8(&mut self) -> Option<String> {
            String::from_utf8(self.string()?.to_vec()).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
    const CERTIFICATE: &str = "5CFd2fd1755d40ecb72977518be15d3b";
    const CHANNEL: &str = "7d72365eb983485397e3e3f9d460bdda";

    /// The inputs of Agora's published vectors.
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

    fn grant(uid: u32, can_publish: bool) -> Grant<'static> {
        Grant {
            room: "vc_0195a8f0c2b37c6e9d4f1a2b3c4d5e6f",
            identity: "alice",
            uid,
            display_name: "Alice",
            can_publish,
            can_subscribe: true,
            issued_at: 1_700_000_000,
            ttl: Duration::from_secs(3600),
        }
    }

    /// Agora's published vectors (AgoraIO/Tools, python3/test/AccessToken2Test.py,
    /// `test_service_rtc` and `test_service_rtc_uid_0`), compared decompressed.
    #[test]
    fn agora_reference_vectors() {
        let expected = "007eJxTYBBbsMMnKq7p9Hf/HcIX5kce9b518kCiQgSr5Zrp4X1Tu6UUGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiVwMRhYWRsYmhkbmxgDCaiTj";
        assert_eq!(
            vector(2_882_341_273).body().unwrap(),
            parse::body(expected).unwrap()
        );
        let expected_uid_0 = "007eJxTYLhzZP08Lxa1Pg57+TcXb/3cZ3wi4V6kbpbOog0G2dOYk20UGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiQwMADacImo=";
        assert_eq!(
            vector(0).body().unwrap(),
            parse::body(expected_uid_0).unwrap()
        );
    }

    #[test]
    fn the_reference_vector_parses_to_its_inputs() {
        let expected = "007eJxTYBBbsMMnKq7p9Hf/HcIX5kce9b518kCiQgSr5Zrp4X1Tu6UUGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiVwMRhYWRsYmhkbmxgDCaiTj";
        let parsed = parse::parse(expected).unwrap();
        assert_eq!(parsed.app_id, APP_ID);
        assert_eq!(
            (parsed.issue_ts, parsed.salt, parsed.expire),
            (1_111_111, 1, 600)
        );
        assert_eq!(parsed.channel, CHANNEL);
        assert_eq!(parsed.uid, "2882341273");
        assert_eq!(parsed.privileges, vec![(PRIVILEGE_JOIN_CHANNEL, 600)]);
    }

    #[test]
    fn our_tokens_parse_back_and_their_signature_checks_out() {
        let inputs = RtcToken {
            publish: true,
            salt: 12_345_678,
            ..vector(42)
        };
        let token = inputs.build().unwrap();
        assert!(token.starts_with("007"));
        let parsed = parse::parse(&token).unwrap();
        assert_eq!(parsed.app_id, APP_ID);
        assert_eq!(parsed.channel, CHANNEL);
        assert_eq!(parsed.uid, "42");
        assert_eq!(
            (parsed.issue_ts, parsed.salt, parsed.expire),
            (1_111_111, 12_345_678, 600)
        );
        assert_eq!(
            parsed.privileges,
            vec![(1, 600), (2, 600), (3, 600), (4, 600)]
        );
        assert_eq!(parsed.signature.len(), 32);

        // Rebuilding from what the token says, with the certificate, gives the same signature.
        let rebuilt = RtcToken {
            app_id: &parsed.app_id,
            app_certificate: CERTIFICATE,
            channel: &parsed.channel,
            uid: parsed.uid.parse().unwrap(),
            publish: parsed.privileges.len() == 4,
            issue_ts: parsed.issue_ts,
            salt: parsed.salt,
            expire: parsed.expire,
        };
        assert_eq!(rebuilt.body().unwrap(), parse::body(&token).unwrap());
        let other_certificate = RtcToken {
            app_certificate: "00000000000000000000000000000000",
            ..rebuilt
        };
        assert_ne!(
            other_certificate.body().unwrap(),
            parse::body(&token).unwrap()
        );
    }

    #[test]
    fn uid_0_is_written_as_the_empty_string() {
        let parsed = parse::parse(&vector(0).build().unwrap()).unwrap();
        assert_eq!(parsed.uid, "");
    }

    #[test]
    fn a_tampered_body_is_not_a_token_we_signed() {
        let mut body = vector(7).body().unwrap();
        let last = body.len() - 1;
        body[last] = b'8'; // uid "7" becomes "8", signature unchanged
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&body).unwrap();
        let compressed = encoder.finish().unwrap();
        let tampered = format!(
            "007{}",
            base64::engine::general_purpose::STANDARD.encode(compressed)
        );
        let parsed = parse::parse(&tampered).unwrap();
        assert_eq!(parsed.uid, "8");
        assert_ne!(vector(8).body().unwrap(), body);
    }

    #[test]
    fn publishers_get_the_publish_privileges_expiring_with_the_token() {
        let engine = AgoraEngine::new(APP_ID.into(), CERTIFICATE.into()).unwrap();
        let credentials = engine.credentials(&grant(7, true)).unwrap();
        assert_eq!(credentials.app_id, APP_ID);
        assert_eq!(credentials.url, "");
        let parsed = parse::parse(&credentials.token).unwrap();
        assert_eq!(parsed.expire, 3600);
        assert_eq!(
            parsed.privileges,
            vec![(1, 3600), (2, 3600), (3, 3600), (4, 3600)]
        );
        assert!(SALT_RANGE.contains(&parsed.salt));
    }

    #[test]
    fn listeners_only_join() {
        let engine = AgoraEngine::new(APP_ID.into(), CERTIFICATE.into()).unwrap();
        let credentials = engine.credentials(&grant(7, false)).unwrap();
        let parsed = parse::parse(&credentials.token).unwrap();
        assert_eq!(parsed.privileges, vec![(PRIVILEGE_JOIN_CHANNEL, 3600)]);
        assert_eq!(parsed.issue_ts, 1_700_000_000);
        assert_eq!(parsed.uid, "7");
        assert_eq!(parsed.channel, "vc_0195a8f0c2b37c6e9d4f1a2b3c4d5e6f");
    }

    #[test]
    fn tokens_agora_would_refuse_are_not_minted() {
        let engine = AgoraEngine::new(APP_ID.into(), CERTIFICATE.into()).unwrap();
        let too_long = "c".repeat(64);
        for room in ["", too_long.as_str(), "vc/room", "salle-é"] {
            let error = engine
                .credentials(&Grant {
                    room,
                    ..grant(1, true)
                })
                .unwrap_err()
                .to_string();
            assert!(error.contains("channel name"), "{error}");
        }
        let error = engine
            .credentials(&Grant {
                issued_at: u64::from(u32::MAX) + 1,
                ..grant(1, true)
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("32-bit timestamp"), "{error}");
        let error = RtcToken {
            app_id: "not-hex",
            ..vector(1)
        }
        .build()
        .unwrap_err()
        .to_string();
        assert!(error.contains("app id must be 32 hex digits"), "{error}");
    }

    #[test]
    fn settings_must_be_complete_and_well_formed() {
        let mut config = crate::engine::tests::config();
        assert!(AgoraEngine::from_config(&config).unwrap().is_none());
        config.agora_app_id = Some(APP_ID.into());
        let error = AgoraEngine::from_config(&config).unwrap_err().to_string();
        assert_eq!(
            error,
            "engine agora is not configured: set AGORA_APP_CERTIFICATE"
        );
        config.agora_app_certificate = Some("not-hex".into());
        let error = AgoraEngine::from_config(&config).unwrap_err().to_string();
        assert!(
            error.contains("AGORA_APP_CERTIFICATE (32 hex digits)"),
            "{error}"
        );
        config.agora_app_certificate = Some(CERTIFICATE.into());
        assert!(AgoraEngine::from_config(&config).unwrap().is_some());
    }

    #[test]
    fn debug_output_hides_the_certificate() {
        let engine = AgoraEngine::new(APP_ID.into(), CERTIFICATE.into()).unwrap();
        for debug in [format!("{engine:?}"), format!("{:?}", vector(1))] {
            assert!(debug.contains(APP_ID), "{debug}");
            assert!(!debug.contains(CERTIFICATE), "{debug}");
        }
    }
}
