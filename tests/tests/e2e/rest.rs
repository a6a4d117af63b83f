//! The REST API's refusals: clear status codes and one JSON error shape, never internals.

use quiver_sdk::RestError;
use quiver_tests::*;

fn status(result: Result<impl std::fmt::Debug, RestError>) -> (u16, String) {
    match result {
        Err(RestError::Api { status, error, .. }) => (status, error),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn accounts_and_friend_requests_refuse_bad_input_with_clear_codes() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let rest = node.rest();
    rest.health().await?;
    assert_eq!(
        status(rest.register("No Spaces!", "long-enough-pw").await),
        (400, "bad_request".into())
    );
    assert_eq!(
        status(rest.register("carol", "short").await),
        (400, "bad_request".into())
    );
    let carol = node.user("carol").await?;
    assert_eq!(
        status(rest.register("carol", "another-password").await),
        (409, "conflict".into())
    );

    let token = &carol.login.token;
    assert_eq!(
        status(rest.request_friend(token, "nobody").await),
        (404, "not_found".into())
    );
    assert_eq!(
        status(rest.request_friend(token, "carol").await),
        (400, "bad_request".into())
    );
    assert_eq!(status(rest.accept_friend(token, "dave").await).0, 404);
    assert_eq!(
        status(rest.friends("not-a-token").await),
        (401, "unauthorized".into())
    );

    // A friend request made from both sides becomes a friendship with one key.
    let dave = node.user("dave").await?;
    let first = rest.request_friend(token, "dave").await?;
    assert_eq!(
        (first.status.as_str(), first.key.is_none()),
        ("pending", true)
    );
    let second = rest.request_friend(&dave.login.token, "carol").await?;
    assert_eq!(second.status, "friends");
    let carol_view = rest.friends(token).await?;
    assert_eq!(carol_view.friends.len(), 1);
    assert_eq!(Some(carol_view.friends[0].key.clone()), second.key);

    // Logging in again with the device id keeps the device; without it makes a new one.
    let again = rest
        .login("carol", &carol.password, Some(carol.login.device))
        .await?;
    assert_eq!(again.device, carol.login.device);
    let other = rest.login("carol", &carol.password, None).await?;
    assert_ne!(other.device, carol.login.device);
    Ok(())
}

#[tokio::test]
async fn login_attempts_are_limited_per_account_and_per_address() -> anyhow::Result<()> {
    let node = TestNode::start_with(|c| {
        c.limits.logins_per_minute_per_account = 3;
        c.limits.logins_per_minute_per_address = 8;
    })
    .await?;
    let rest = node.rest();
    let carol = node.user("carol").await?; // 2 requests from this address so far, 1 login
    for _ in 0..2 {
        assert_eq!(
            status(rest.login("carol", "wrong-password", None).await).0,
            401
        );
    }
    // Carol's account has used its 3 attempts: even the right password waits.
    assert_eq!(
        status(rest.login("carol", &carol.password, None).await),
        (429, "rate_limited".into())
    );
    // Another account from the same address still gets in...
    let dave = node.user("dave").await?; // requests 6 and 7 from this address
                                         // ...until the address has used its 8.
    assert!(rest.login("dave", &dave.password, None).await.is_ok());
    assert_eq!(
        status(rest.login("dave", &dave.password, None).await).0,
        429
    );
    assert_eq!(status(rest.register("erin", "erin-password").await).0, 429);
    Ok(())
}

#[tokio::test]
async fn an_oversize_request_body_is_refused() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let huge = "x".repeat(64 * 1024);
    let (status_code, _) = status(node.rest().register("carol", &huge).await);
    assert_eq!(status_code, 413, "a 64 KiB body is over the 16 KiB limit");
    node.user("carol").await?; // the node is fine
    Ok(())
}
