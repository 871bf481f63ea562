// Package ui is Spool's web dashboard, served at /ui/ on the API port:
// server-rendered pages (overview, queue, task, enqueue) from html/template,
// with a little plain JavaScript and CSS embedded in the binary. It owns its
// sign-in sessions (signed cookies any replica verifies, no shared state),
// CSRF protection and security headers. Every page works without
// JavaScript; the script only refreshes the live parts.
//
// It talks to storage only through store.Store, reuses the API's task
// validation (api.DecodeTask) so a form is refused with the API's words,
// and must not import a driver, the dispatcher or telemetry.
package ui

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the dashboard lives on the API port.
const Prefix = "/ui/"

// Defaults for Config fields left zero.
const (
	DefaultSessionTTL     = 12 * time.Hour
	DefaultRequestTimeout = 10 * time.Second
	// pageSize is how many tasks a queue page lists.
	pageSize = 50
	// maxBulk bounds the tasks one bulk request acts on, so a request's
	// cost is bounded whatever the selection.
	maxBulk = 100
	// maxSweep bounds the tasks one "retry every failed task" request retries.
	maxSweep = 500
	// destinationLive is the window of replica reports summed into a
	// destination's figures (as the API's).
	destinationLive = 3 * time.Second
)

// csp is the Content-Security-Policy of every dashboard response: scripts,
// styles and fetches from this origin only, no inline script or style.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config is what the dashboard needs. Only Store is required.
type Config struct {
	Store store.Store
	// Logger receives internal errors. Default: discard.
	Logger *slog.Logger
	// APIKeys are the keys sign-in accepts, with their roles; empty means
	// open mode: no sign-in, every request acts as admin, as the API does
	// without keys (cmd allows that only on loopback or when told to).
	APIKeys []auth.Key
	// SessionTTL is how long a sign-in lasts. Default DefaultSessionTTL.
	SessionTTL time.Duration
	// SecureCookie marks the session cookie Secure on plain-HTTP requests
	// too (TLS terminated by a proxy in front). A TLS request always gets it.
	SecureCookie bool
	// TraceURL links a task's trace: {trace_id} is replaced. "" = no link.
	TraceURL string
	// CheckTarget and MaxBodyBytes judge an enqueued task as the API does.
	CheckTarget  func(*url.URL) error
	MaxBodyBytes int64
	// APIBase is the API's address as shown in "copy as curl"; default
	// the request's own scheme and host.
	APIBase string
	// Instrument, when set, wraps each route's handler (route is its
	// pattern), as api.Config.Instrument does.
	Instrument func(route string, h http.Handler) http.Handler
	// RequestTimeout bounds a request's store calls. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Now is the clock of sessions and the enqueue form. Default time.Now.
	Now func() time.Time
}

// Server is the dashboard's handler.
type Server struct {
	cfg   Config
	log   *slog.Logger
	sess  *sessions
	pages map[string]*template.Template
	mux   *http.ServeMux
	tp    throughputCache
	// signIns limits failed sign-ins per client address.
	signIns *signInLimiter
}

// route is one page or action and the least role it needs.
type route struct {
	pattern string
	need    auth.Role // auth.None: no sign-in needed (static files, sign-in itself)
	handler func(s *Server, w http.ResponseWriter, r *http.Request, sess session) error
}

// routes: every GET only reads; every change is a POST with a CSRF token,
// answered 303 back to a page with a flash message, so each works without
// JavaScript.
func routes() []route {
	const read, write = auth.Read, auth.Write
	return []route{
		{"GET /ui/{$}", read, (*Server).overview},
		{"GET /ui/queues/{queue}", read, (*Server).queuePage},
		{"POST /ui/queues/{queue}/pause", write, (*Server).pauseQueue},
		{"POST /ui/queues/{queue}/resume", write, (*Server).resumeQueue},
		{"POST /ui/queues/{queue}/settings", write, (*Server).queueSettings},
		{"POST /ui/queues/{queue}/bulk", write, (*Server).bulk},
		{"POST /ui/queues/{queue}/retry-failed", write, (*Server).retryFailed},
		{"GET /ui/tasks/{id}", read, (*Server).taskPage},
		{"POST /ui/tasks/{id}/retry", write, (*Server).retryTask},
		{"POST /ui/tasks/{id}/cancel", write, (*Server).cancelTask},
		{"GET /ui/enqueue", read, (*Server).enqueueForm},
		{"POST /ui/enqueue", write, (*Server).enqueue},
		{"GET /ui/signin", auth.None, (*Server).signInForm},
		{"POST /ui/signin", auth.None, (*Server).signIn},
		{"POST /ui/signout", auth.None, (*Server).signOut},
	}
}

// New validates cfg, fills its defaults and returns the dashboard.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("ui: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionTTL < 0 {
		return nil, fmt.Errorf("ui: Config.SessionTTL is %s; want > 0 (or 0 for the default)", cfg.SessionTTL)
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TraceURL != "" && !strings.Contains(cfg.TraceURL, "{trace_id}") {
		return nil, errors.New("ui: Config.TraceURL must contain {trace_id}")
	}
	sess, err := newSessions(cfg.APIKeys, cfg.SessionTTL)
	if err != nil {
		return nil, fmt.Errorf("ui: Config.APIKeys: %w", err)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, sess: sess, pages: pages, mux: http.NewServeMux(), signIns: newSignInLimiter()}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	s.handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticFiles(static)))
	for _, rt := range routes() {
		s.handle(rt.pattern, s.wrap(rt))
	}
	s.handle("/ui/", http.HandlerFunc(s.notFound))
	return s, nil
}

func (s *Server) handle(pattern string, h http.Handler) {
	h = s.logRequests(pattern, h)
	if s.cfg.Instrument != nil {
		h = s.cfg.Instrument(pattern, h)
	}
	s.mux.Handle(pattern, h)
}

// ServeHTTP serves everything under Prefix (and /ui, redirected to it).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	if r.URL.Path == "/ui" {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// logRequests writes one line per request, as the API does (route, path,
// status, duration; never a cookie or a form value), at Debug for the
// assets and the live refreshes, which every open page makes every few
// seconds; and turns a panic into a logged 500.
func (s *Server) logRequests(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("dashboard: panic", "http.route", route, "error.message", fmt.Sprint(p))
				if sw.status == 0 {
					http.Error(sw, "internal error", http.StatusInternalServerError)
				}
			}
			status := cmp.Or(sw.status, http.StatusOK)
			lvl := slog.LevelInfo
			switch {
			case status >= 500:
				lvl = slog.LevelWarn
			case strings.HasPrefix(route, "GET /ui/static/") || r.URL.Query().Get("fragment") != "":
				lvl = slog.LevelDebug
			}
			path := r.URL.Path
			if len(path) > 256 {
				path = path[:256]
			}
			s.log.LogAttrs(r.Context(), lvl, "http request",
				slog.String("http.request.method", r.Method),
				slog.String("http.route", route),
				slog.String("url.path", path),
				slog.Int("http.response.status_code", status),
				slog.Int64("event.duration", time.Since(start).Nanoseconds()))
		}()
		next.ServeHTTP(sw, r)
	})
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// staticFiles serves the embedded assets; they change only with the binary.
func staticFiles(fsys fs.FS) http.Handler {
	fsrv := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") || r.URL.Path == "" {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fsrv.ServeHTTP(w, r)
	})
}

// wrap puts a route behind sign-in, its role, CSRF and the request timeout.
func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		if r.Method == http.MethodPost {
			// Room for a task of the API's largest size, form-encoded.
			r.Body = http.MaxBytesReader(w, r.Body, 4*max(s.cfg.MaxBodyBytes, 1<<20))
		}
		sess, err := s.session(r)
		if rt.need != auth.None {
			if err != nil {
				s.toSignIn(w, r, err)
				return
			}
			if !sess.role.Allows(rt.need) {
				s.errorPage(w, r, sess, http.StatusForbidden,
					fmt.Sprintf("This API key has the %s role; this action needs %s.", sess.role, rt.need))
				return
			}
		}
		if r.Method == http.MethodPost {
			if pe := s.checkPost(r, sess, rt.need != auth.None); pe != nil {
				s.errorPage(w, r, sess, pe.status, pe.msg)
				return
			}
		}
		if err := rt.handler(s, w, r, sess); err != nil {
			s.fail(w, r, sess, err)
		}
	})
}

// session returns the request's sign-in; open mode is always signed in as admin.
func (s *Server) session(r *http.Request) (session, error) {
	if s.sess.openMode() {
		return session{role: auth.Admin}, nil
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return session{}, errNoSession
	}
	return s.sess.verify(c.Value, s.cfg.Now())
}

// checkPost is the CSRF guard of a state-changing request: the browser must
// say the request came from this origin (Sec-Fetch-Site, else Origin, when
// it sends them), and a signed-in form must carry the session's token. The
// sign-in form has no session yet; SameSite=Strict and the origin check
// cover it.
func (s *Server) checkPost(r *http.Request, sess session, needToken bool) *pageError {
	refused := &pageError{http.StatusForbidden,
		"This request did not come from a Spool dashboard page (cross-site request refused). Reload the page and try again."}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return refused
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return refused
		}
	}
	if !needToken {
		return nil
	}
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &pageError{http.StatusRequestEntityTooLarge, fmt.Sprintf("The form is larger than the limit of %d bytes.", tooBig.Limit)}
		}
		return &pageError{http.StatusBadRequest, "The form could not be read."}
	}
	if !s.sess.checkCSRF(sess, r.PostForm.Get("csrf")) {
		return &pageError{http.StatusForbidden,
			"The form's security token is missing or out of date (it changes at each sign-in). Reload the page and try again."}
	}
	return nil
}

// toSignIn sends a request without a valid session to the sign-in page,
// remembering where it was going.
func (s *Server) toSignIn(w http.ResponseWriter, r *http.Request, why error) {
	q := url.Values{}
	next := r.URL.Path
	if r.Method == http.MethodGet && r.URL.RawQuery != "" {
		next += "?" + r.URL.RawQuery
	}
	q.Set("next", next)
	if errors.Is(why, errSessionExpired) {
		q.Set("expired", "1")
	}
	if r.URL.Query().Get("fragment") != "" {
		// A live refresh cannot follow a redirect to a form: say so plainly.
		http.Error(w, "signed out", http.StatusUnauthorized)
		return
	}
	http.Redirect(w, r, "/ui/signin?"+q.Encode(), http.StatusSeeOther)
}

// fail answers a handler's error: a store that cannot be reached is 503,
// anything else is logged and shown as a generic 500.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, sess session, err error) {
	var pe *pageError
	switch {
	case errors.As(err, &pe):
		s.errorPage(w, r, sess, pe.status, pe.msg)
	case errors.Is(err, store.ErrNotFound):
		s.errorPage(w, r, sess, http.StatusNotFound, "Not found.")
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		s.log.Warn("dashboard: store unavailable", "url.path", r.URL.Path, "error.message", err.Error())
		s.errorPage(w, r, sess, http.StatusServiceUnavailable, "The database cannot be reached right now. Try again in a moment.")
	default:
		s.log.Error("dashboard: internal error", "url.path", r.URL.Path, "error.message", err.Error())
		s.errorPage(w, r, sess, http.StatusInternalServerError, "Something went wrong on the server; the details are in its log.")
	}
}

// pageError is an error a handler wants shown with its status.
type pageError struct {
	status int
	msg    string
}

func (e *pageError) Error() string { return e.msg }

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	sess, _ := s.session(r)
	s.errorPage(w, r, sess, http.StatusNotFound, "There is no dashboard page at this address.")
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, sess session, status int, msg string) {
	s.render(w, r, sess, status, "error", "Error", map[string]any{"Status": status, "StatusText": http.StatusText(status), "Message": msg})
}

// flash messages survive the 303 after an action in a short-lived cookie
// (not the URL, so a link cannot make the dashboard say something).
const flashCookie = "spool_flash"

func (s *Server) redirect(w http.ResponseWriter, r *http.Request, to, flash string) {
	if flash != "" {
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: url.QueryEscape(flash), Path: Prefix, MaxAge: 60,
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func (s *Server) takeFlash(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Path: Prefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
	msg, err := url.QueryUnescape(c.Value)
	if err != nil || len(msg) > 500 {
		return ""
	}
	return msg
}

func (s *Server) secure(r *http.Request) bool { return r.TLS != nil || s.cfg.SecureCookie }
