//! The Phoenix Channels protocol as cameras speak it on the status socket
//! (`GET /devices/websocket`, c2c-api.md §3): the two JSON serializers and what the server
//! answers to each message. Pure: no I/O, so every rule is unit-tested here and
//! `routes::socket` only moves frames and pushes status changes.

use std::collections::HashMap;

use serde_json::{Value, json};

/// Topics one socket may join; a camera joins one or two.
pub const MAX_TOPICS: usize = 16;

/// The two wire formats of Phoenix's JSON serializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    /// `{"topic", "event", "payload", "ref"}` (what cameras send).
    V1,
    /// `[join_ref, ref, topic, event, payload]`, chosen by `vsn=2.0.0` in the query.
    V2,
}

impl Vsn {
    /// The serializer a socket's query asks for (`vsn=2.x` → v2, anything else v1).
    pub fn from_query(vsn: Option<&str>) -> Vsn {
        match vsn {
            Some(v) if v.trim().starts_with('2') => Vsn::V2,
            _ => Vsn::V1,
        }
    }
}

/// One Phoenix message. Refs are echoed back exactly as the device sent them (cameras send
/// strings, some libraries numbers).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub join_ref: Value,
    pub msg_ref: Value,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

impl Message {
    /// Decodes a text frame; `None` when it is not a Phoenix message in this serializer.
    pub fn decode(vsn: Vsn, text: &str) -> Option<Message> {
        let value: Value = serde_json::from_str(text).ok()?;
        match (vsn, value) {
            (Vsn::V1, Value::Object(mut o)) => Some(Message {
                join_ref: o.remove("join_ref").unwrap_or(Value::Null),
                msg_ref: o.remove("ref").unwrap_or(Value::Null),
                topic: string(o.remove("topic")?)?,
                event: string(o.remove("event")?)?,
                payload: o.remove("payload").unwrap_or_else(|| json!({})),
            }),
            (Vsn::V2, Value::Array(a)) if a.len() == 5 => {
                let mut a = a.into_iter();
                let mut next = || a.next().unwrap_or(Value::Null);
                let (join_ref, msg_ref) = (next(), next());
                let (topic, event, payload) = (string(next())?, string(next())?, next());
                Some(Message {
                    join_ref,
                    msg_ref,
                    topic,
                    event,
                    payload,
                })
            }
            _ => None,
        }
    }

    pub fn encode(&self, vsn: Vsn) -> String {
        let value = match vsn {
            Vsn::V1 => json!({
                "topic": self.topic,
                "event": self.event,
                "payload": self.payload,
                "ref": self.msg_ref,
            }),
            Vsn::V2 => json!([
                self.join_ref,
                self.msg_ref,
                self.topic,
                self.event,
                self.payload
            ]),
        };
        value.to_string()
    }

    fn reply(&self, status: &str, response: Value) -> Message {
        Message {
            join_ref: self.join_ref.clone(),
            msg_ref: self.msg_ref.clone(),
            topic: self.topic.clone(),
            event: "phx_reply".to_owned(),
            payload: json!({ "status": status, "response": response }),
        }
    }

    fn error(&self, reason: &str) -> Message {
        self.reply("error", json!({ "reason": reason }))
    }
}

fn string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The channels one socket has joined, and the answers to what the device sends.
#[derive(Debug, Default)]
pub struct Channels {
    /// Joined `devices:*` topics and the `join_ref` each was joined with.
    joined: HashMap<String, Value>,
}

/// What handling one message produced.
#[derive(Debug, PartialEq)]
pub struct Handled {
    pub reply: Message,
    /// A `devices:*` topic joined by this message: it should learn the current status.
    pub joined: Option<String>,
}

impl Channels {
    pub fn handle(&mut self, msg: Message) -> Handled {
        let mut joined = None;
        let reply = match (msg.event.as_str(), msg.topic.as_str()) {
            ("heartbeat", "phoenix") => msg.reply("ok", json!({})),
            ("phx_join", topic) if topic.starts_with("devices:") => {
                if !self.joined.contains_key(topic) && self.joined.len() >= MAX_TOPICS {
                    msg.error("too many topics")
                } else {
                    // A join_ref is what v2 pushes carry; v1 clients leave it out, and
                    // Phoenix then uses the join's ref.
                    let join_ref = match &msg.join_ref {
                        Value::Null => msg.msg_ref.clone(),
                        other => other.clone(),
                    };
                    self.joined.insert(topic.to_owned(), join_ref);
                    joined = Some(topic.to_owned());
                    msg.reply("ok", json!({}))
                }
            }
            ("phx_leave", topic) => {
                self.joined.remove(topic);
                msg.reply("ok", json!({}))
            }
            _ => msg.error("unmatched topic"),
        };
        Handled { reply, joined }
    }

    /// A server push of `event` to one joined topic (`None` if it is not joined).
    pub fn push_to(&self, topic: &str, event: &str, payload: &Value) -> Option<Message> {
        self.joined.get(topic).map(|join_ref| Message {
            join_ref: join_ref.clone(),
            msg_ref: Value::Null,
            topic: topic.to_owned(),
            event: event.to_owned(),
            payload: payload.clone(),
        })
    }

    /// The same push to every joined topic.
    pub fn push_all(&self, event: &str, payload: &Value) -> Vec<Message> {
        self.joined
            .keys()
            .filter_map(|topic| self.push_to(topic, event, payload))
            .collect()
    }
}

/// The payload of `status_updated`.
pub fn status_payload(paused: bool) -> Value {
    json!({ "status": if paused { "paused" } else { "online" } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(channels: &mut Channels, vsn: Vsn, text: &str) -> Value {
        let msg = Message::decode(vsn, text).expect("decodes");
        let out = channels.handle(msg).reply.encode(vsn);
        serde_json::from_str(&out).expect("json")
    }

    #[test]
    fn v1_join_heartbeat_leave_and_unknown() {
        let mut c = Channels::default();
        let join = handle(
            &mut c,
            Vsn::V1,
            r#"{"topic":"devices:abc","event":"phx_join","payload":{},"ref":"1"}"#,
        );
        assert_eq!(join["topic"], "devices:abc");
        assert_eq!(join["event"], "phx_reply");
        assert_eq!(join["ref"], "1");
        assert_eq!(join["payload"], json!({"status":"ok","response":{}}));

        let beat = handle(
            &mut c,
            Vsn::V1,
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":2}"#,
        );
        assert_eq!(beat["ref"], 2);
        assert_eq!(beat["payload"]["status"], "ok");

        let pushes = c.push_all("status_updated", &status_payload(true));
        assert_eq!(pushes.len(), 1);
        let push: Value = serde_json::from_str(&pushes[0].encode(Vsn::V1)).expect("json");
        assert_eq!(push["event"], "status_updated");
        assert_eq!(push["payload"], json!({"status":"paused"}));
        assert_eq!(push["ref"], Value::Null);

        let unknown = handle(
            &mut c,
            Vsn::V1,
            r#"{"topic":"devices:abc","event":"shout","payload":{},"ref":"3"}"#,
        );
        assert_eq!(
            unknown["payload"],
            json!({"status":"error","response":{"reason":"unmatched topic"}})
        );

        let leave = handle(
            &mut c,
            Vsn::V1,
            r#"{"topic":"devices:abc","event":"phx_leave","payload":{},"ref":"4"}"#,
        );
        assert_eq!(leave["payload"]["status"], "ok");
        assert!(
            c.push_all("status_updated", &status_payload(false))
                .is_empty()
        );
    }

    #[test]
    fn v2_arrays_carry_the_join_ref_on_pushes() {
        let mut c = Channels::default();
        let join = handle(&mut c, Vsn::V2, r#"["7","7","devices:x","phx_join",{}]"#);
        assert_eq!(
            join,
            json!(["7", "7", "devices:x", "phx_reply", {"status":"ok","response":{}}])
        );
        let beat = handle(&mut c, Vsn::V2, r#"[null,"8","phoenix","heartbeat",{}]"#);
        assert_eq!(
            beat,
            json!([null, "8", "phoenix", "phx_reply", {"status":"ok","response":{}}])
        );
        let push = c.push_all("status_updated", &status_payload(false));
        let push: Value = serde_json::from_str(&push[0].encode(Vsn::V2)).expect("json");
        assert_eq!(
            push,
            json!(["7", null, "devices:x", "status_updated", {"status":"online"}])
        );
        let unknown = handle(&mut c, Vsn::V2, r#"["7","9","rooms:lobby","phx_join",{}]"#);
        assert_eq!(unknown[4]["response"]["reason"], "unmatched topic");
    }

    #[test]
    fn what_is_not_a_message_decodes_to_none() {
        for text in [
            "",
            "not json",
            "[1,2,3]",
            r#"{"event":"heartbeat"}"#,
            r#"{"topic":1,"event":"heartbeat"}"#,
        ] {
            assert_eq!(Message::decode(Vsn::V1, text), None, "{text}");
        }
        assert_eq!(
            Message::decode(Vsn::V2, r#"{"topic":"phoenix","event":"heartbeat"}"#),
            None
        );
        assert_eq!(Vsn::from_query(Some("2.0.0")), Vsn::V2);
        assert_eq!(Vsn::from_query(Some("1.0.0")), Vsn::V1);
        assert_eq!(Vsn::from_query(None), Vsn::V1);
    }

    #[test]
    fn joined_topics_are_capped() {
        let mut c = Channels::default();
        for i in 0..MAX_TOPICS {
            let msg = format!(r#"{{"topic":"devices:{i}","event":"phx_join","ref":"{i}"}}"#);
            assert_eq!(handle(&mut c, Vsn::V1, &msg)["payload"]["status"], "ok");
        }
        let over = handle(
            &mut c,
            Vsn::V1,
            r#"{"topic":"devices:more","event":"phx_join","ref":"x"}"#,
        );
        assert_eq!(over["payload"]["response"]["reason"], "too many topics");
        // Joining a topic again is not a new one.
        let again = handle(
            &mut c,
            Vsn::V1,
            r#"{"topic":"devices:0","event":"phx_join","ref":"y"}"#,
        );
        assert_eq!(again["payload"]["status"], "ok");
    }
}
