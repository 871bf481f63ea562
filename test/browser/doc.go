// Package browser drives the dashboard in a real Chromium (Debian's
// chromium, through chromedp) against the real spool binary: sign in, the
// overview, a filtered queue, a task with three attempts and its retry, a
// bulk cancel, the enqueue form and a count changing live. Each test saves
// screenshots in its artifact directory (go test -artifacts keeps them);
// with SPOOL_SCREENSHOTS_DIR set they are also written there, which is how
// docs/images is refreshed (make screenshots).
//
// Without Chromium the tests skip, unless SPOOL_TEST_REQUIRE_CHROMIUM=1
// (set by .ci/run), when they fail.
package browser
