//! The one policy check in front of every gRPC method: a tower layer around the whole router
//! that maps the request's path to a rule and refuses the call before any service sees it.
//! Invariants: a method without a rule is refused (so no service can be added without one); a
//! call without a verified caller is refused; the services still check their scope (what a caller
//! may see), but whether it may call at all is decided here first.

use super::Caller;
use crate::policy::{Rpc, SharedPolicy};
use std::sync::Arc;
use std::task::{Context, Poll};

/// What a method requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The policy must grant this RPC to the caller.
    Granted(Rpc),
    /// Any verified identity of the federation (health checks, reflection of the public schema).
    AnyCaller,
}

/// The rule of every method this node serves, by gRPC path; `None` for anything else.
pub fn rule(path: &str) -> Option<Rule> {
    Some(match path {
        "/cx.v1.Publisher/Publish" | "/cx.v1.Publisher/PublishStream" => Rule::Granted(Rpc::Publish),
        "/cx.v1.Replication/Sync" => Rule::Granted(Rpc::Sync),
        "/cx.v1.Replication/Heads" => Rule::Granted(Rpc::Heads),
        "/cx.v1.Feed/Subscribe" => Rule::Granted(Rpc::Subscribe),
        "/cx.v1.Feed/Profile" => Rule::Granted(Rpc::Profile),
        "/cx.v1.Feed/Acknowledge" => Rule::Granted(Rpc::Acknowledge),
        // Receipts name departments and records: operators' business, like the sync status.
        "/cx.v1.Operations/SyncStatus" | "/cx.v1.Operations/Receipts" => Rule::Granted(Rpc::SyncStatus),
        "/cx.v1.Operations/Evaluate" => Rule::Granted(Rpc::Evaluate),
        "/grpc.health.v1.Health/Check" | "/grpc.health.v1.Health/Watch" => Rule::AnyCaller,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        | "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" => Rule::AnyCaller,
        _ => return None,
    })
}

/// Why a call is refused at the gate, or None when it may go on.
pub fn refusal(policy: &SharedPolicy, path: &str, caller: Option<&Caller>) -> Option<tonic::Status> {
    let Some(caller) = caller else {
        return Some(tonic::Status::unauthenticated(
            "no verified client certificate on this connection",
        ));
    };
    // Which CA may issue which identity: judged on every call, so a policy change applies to the
    // next call of every open connection.
    let issuers = policy.current().issuers();
    if !issuers.is_empty() {
        let judged = match &caller.issuer {
            Some(ca) => issuers.check(&caller.identity, ca),
            None => Err(format!("{}: the CA of its certificate is not known", caller.identity)),
        };
        if let Err(why) = judged {
            tracing::warn!(identity = %caller.identity, remote = %caller.remote, reason = %why, "call refused: certificate from a CA not allowed to issue it");
            return Some(tonic::Status::permission_denied(why));
        }
    }
    match rule(path) {
        None => {
            tracing::warn!(identity = %caller.identity, remote = %caller.remote, method = path, "call refused: no policy rule for this method");
            Some(tonic::Status::permission_denied(format!(
                "{path}: no policy rule for this method, so nobody may call it"
            )))
        }
        Some(Rule::AnyCaller) => None,
        Some(Rule::Granted(rpc)) => {
            let policy = policy.current();
            if policy.allows(&caller.identity, rpc) {
                return None;
            }
            tracing::warn!(identity = %caller.identity, remote = %caller.remote, rpc = ?rpc, "call refused by policy");
            Some(tonic::Status::permission_denied(policy.denial(&caller.identity, rpc)))
        }
    }
}

/// The layer: `Server::builder().layer(PolicyGate::new(policy))`.
#[derive(Clone)]
pub struct PolicyGate {
    policy: Arc<SharedPolicy>,
}

impl PolicyGate {
    pub fn new(policy: Arc<SharedPolicy>) -> PolicyGate {
        PolicyGate { policy }
    }
}

impl<S> tower::Layer<S> for PolicyGate {
    type Service = Gated<S>;
    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    policy: Arc<SharedPolicy>,
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Gated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let caller = request.extensions().get::<Caller>();
        if let Some(status) = refusal(&self.policy, request.uri().path(), caller) {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        // The call is open on its connection until its response's last frame.
        let guard = caller.and_then(|c| c.activity.as_ref()).map(|a| a.begin());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(guard) => response.map(|body| tonic::body::Body::new(Open { body, _guard: guard })),
                None => response,
            })
        })
    }
}

/// A response body that keeps its call counted open until it ends or is dropped.
struct Open {
    body: tonic::body::Body,
    _guard: super::transport::CallGuard,
}

impl http_body::Body for Open {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Identity;
    use crate::policy::Policy;
    use crate::record::Region;
    use prost::Message;

    /// Every method of every service the node registers, as gRPC paths, from the descriptor sets
    /// it serves through reflection.
    fn served_methods() -> Vec<String> {
        let mut paths = Vec::new();
        for set in [
            super::super::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(set).expect("descriptor set");
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        paths.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                    }
                }
            }
        }
        paths
    }

    #[test]
    fn every_served_method_has_a_rule() {
        let paths = served_methods();
        assert!(paths.len() >= 12, "descriptor sets read: {paths:?}");
        let missing: Vec<_> = paths.iter().filter(|p| rule(p).is_none()).collect();
        assert!(missing.is_empty(), "methods without a policy rule: {missing:?}");
    }

    fn caller(identity: Identity) -> Caller {
        Caller {
            identity,
            remote: "127.0.0.1:1".parse().expect("addr"),
            issuer: None,
            activity: None,
        }
    }

    #[test]
    fn the_gate_refuses_what_the_policy_does_not_grant_and_unknown_methods() {
        let zj = Region::parse("330000").expect("region");
        let policy = SharedPolicy::fixed(Policy::builtin(zj));
        let dept = caller(Identity::Department {
            region: zj,
            dept: "amr".to_string(),
        });
        let node = caller(Identity::Node(Region::parse("320000").expect("region")));
        let refused = refusal(&policy, "/cx.v1.Replication/Sync", Some(&dept)).expect("department may not sync");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refusal(&policy, "/cx.v1.Replication/Sync", Some(&node)).is_none());
        let refused = refusal(&policy, "/cx.v1.Replication/Drop", Some(&node)).expect("unknown method");
        assert!(refused.message().contains("no policy rule"), "{}", refused.message());
        assert!(refusal(&policy, "/grpc.health.v1.Health/Check", Some(&dept)).is_none());
        let refused = refusal(&policy, "/grpc.health.v1.Health/Check", None).expect("no caller");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
}
