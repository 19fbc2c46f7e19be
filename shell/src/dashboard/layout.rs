//! The frame of every page: head, navigation, the signed-in operator, and the `#live` region
//! that the page's script refreshes in place.

use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::session::Operator;

/// The request header the page's script sends when it asks for the live region alone.
pub const LIVE_HEADER: &str = "x-dashboard-live";

/// The pages of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Pools,
    Lifecycle,
    Workspace,
}

impl Nav {
    /// How often the page refreshes its live region, milliseconds: the pools change every
    /// cycle; the lifecycle lists ask the core about every workspace, and change by the minute.
    fn refresh_ms(self) -> u32 {
        match self {
            Nav::Pools => 3_000,
            Nav::Lifecycle => 15_000,
            Nav::Workspace => 10_000,
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Poolkeeper" }
            link rel="stylesheet" href="/dashboard/assets/dashboard.css";
            script src="/dashboard/assets/dashboard.js" defer {}
        }
    }
}

/// A page without navigation (sign-in, errors).
pub fn bare_page(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body.bare {
                    header.top { span.brand { "Poolkeeper" } }
                    main { h1 { (title) } (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A signed-in page, or only its live region when the page's script asks for it.
pub fn respond(
    headers: &HeaderMap,
    title: &str,
    operator: &Operator,
    nav: Nav,
    live: Markup,
) -> Response {
    if headers.contains_key(LIVE_HEADER) {
        return Html(live.into_string()).into_response();
    }
    let item = |target: Nav, href: &str, label: &str| {
        html! { a href=(href) aria-current=[(nav == target).then_some("page")] { (label) } }
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body {
                    header.top {
                        span.brand { "Poolkeeper" }
                        nav {
                            (item(Nav::Pools, "/dashboard/pools", "Pools"))
                            (item(Nav::Lifecycle, "/dashboard/lifecycle", "Lifecycle"))
                        }
                        form.signout method="post" action="/dashboard/sign-out" {
                            span #operator { (operator.user.username) " (" (operator.user.role.as_str()) ")" }
                            input type="hidden" name="csrf" value=(operator.csrf_token);
                            button #sign-out type="submit" { "Sign out" }
                        }
                    }
                    main {
                        h1 { (title) }
                        div #live data-refresh-ms=(nav.refresh_ms()) { (live) }
                    }
                }
            }
        }
        .into_string(),
    )
    .into_response()
}
