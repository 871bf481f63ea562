package fastapi

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	op   string // upper case: FROM, RUN, COPY…
	args string
}

func parseDockerfile(t *testing.T, text string) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		} else if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		op, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{line: start, op: strings.ToUpper(op), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// TestDockerfile holds examples/fastapi/Dockerfile to the guide's advice
// done right, without building it: a slim Python base named by a tag, the
// dependencies installed in a layer before the code is copied, a numeric
// non-root user, no secret in ENV or ARG, nothing but requirements.txt and
// app/ in the build context, and an exec-form CMD.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(repoRoot(t), "examples", "fastapi")
	raw, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	checkDockerfile(t, parseDockerfile(t, string(raw)), func(format string, args ...any) { t.Errorf(format, args...) })

	ignore, err := os.ReadFile(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		t.Fatalf(".dockerignore: %v (without one, everything beside the Dockerfile is sent to the build)", err)
	}
	var rules []string
	for _, l := range strings.Split(string(ignore), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			rules = append(rules, l)
		}
	}
	if len(rules) == 0 || rules[0] != "*" {
		t.Errorf(".dockerignore rules %q: want a first rule * (deny everything) and exceptions for what the image needs", rules)
	}
}

// TestDockerfileCheckBites: the check refuses the guide's own Dockerfile
// (root user, everything copied at once) and the usual mistakes, so a
// passing TestDockerfile means something.
func TestDockerfileCheckBites(t *testing.T) {
	t.Parallel()
	guide := `FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8000
CMD ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000"]`
	good := `ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
WORKDIR /app
COPY requirements.txt ./
RUN python -m pip install --no-cache-dir -r requirements.txt
COPY app/ ./app/
USER 65532:65532
HEALTHCHECK CMD ["python", "-c", "pass"]
CMD ["python", "-m", "uvicorn", "app.main:app"]`
	cases := map[string]string{
		"the guide's":            guide,
		"user by name":           strings.Replace(good, "USER 65532:65532", "USER app", 1),
		"root user":              strings.Replace(good, "USER 65532:65532", "USER 0", 1),
		"no user":                strings.Replace(good, "USER 65532:65532\n", "", 1),
		"latest base":            strings.Replace(good, "python:3.11-slim-bookworm", "python:latest", 1),
		"full base":              strings.Replace(good, "python:3.11-slim-bookworm", "python:3.11-bookworm", 1),
		"code before deps":       strings.Replace(good, "COPY app/ ./app/", "COPY requirements.txt ./", 1),
		"copy all":               strings.Replace(good, "COPY app/ ./app/", "COPY . .", 1),
		"secret in env":          strings.Replace(good, "WORKDIR /app", "ENV SPOOL_API_KEY=abc\nWORKDIR /app", 1),
		"secret in arg":          strings.Replace(good, "WORKDIR /app", "ARG DATABASE_PASSWORD\nWORKDIR /app", 1),
		"shell-form cmd":         strings.Replace(good, `CMD ["python", "-m", "uvicorn", "app.main:app"]`, "CMD python -m uvicorn app.main:app", 1),
		"user reset before cmd":  strings.Replace(good, "HEALTHCHECK", "USER root\nHEALTHCHECK", 1),
		"install after the code": strings.Replace(good, "COPY app/ ./app/", "COPY app/ ./app/\nRUN python -m pip install ./app", 1),
	}
	var msgs []string
	checkDockerfile(t, parseDockerfile(t, good), func(format string, args ...any) {
		msgs = append(msgs, format)
	})
	if len(msgs) > 0 {
		t.Fatalf("the good Dockerfile is refused: %q", msgs)
	}
	for name, text := range cases {
		failed := false
		checkDockerfile(t, parseDockerfile(t, text), func(string, ...any) { failed = true })
		if !failed {
			t.Errorf("%s Dockerfile passes the check", name)
		}
	}
}

var secretName = regexp.MustCompile(`(?i)(PASSWORD|SECRET|TOKEN|API_KEY|SIGNING_KEY|DATABASE_URL|PRIVATE)`)

func checkDockerfile(t *testing.T, ins []instruction, errorf func(string, ...any)) {
	t.Helper()
	args := map[string]string{}
	var from []instruction
	user := ""
	userLine := 0
	depsCopy, depsInstall, codeCopy, cmdLine := 0, 0, 0, 0
	for _, in := range ins {
		switch in.op {
		case "ARG":
			name, def, _ := strings.Cut(in.args, "=")
			args[name] = def
			if secretName.MatchString(name) && !strings.HasSuffix(name, "_FILE") {
				errorf("line %d: ARG %s: build arguments are kept in the image's history; secrets come at run time", in.line, name)
			}
		case "ENV":
			for _, f := range strings.Fields(in.args) {
				name, _, _ := strings.Cut(f, "=")
				if secretName.MatchString(name) && !strings.HasSuffix(name, "_FILE") {
					errorf("line %d: ENV %s: a secret in the image", in.line, name)
				}
			}
		case "FROM":
			from = append(from, in)
		case "COPY":
			f := strings.Fields(in.args)
			var src []string
			for _, s := range f[:len(f)-1] {
				if !strings.HasPrefix(s, "--") {
					src = append(src, s)
				}
			}
			for _, s := range src {
				switch {
				case s == "requirements.txt":
					if depsCopy == 0 {
						depsCopy = in.line
					}
				case s == "." || s == "./" || s == "*":
					errorf("line %d: COPY %s copies the whole context; copy the code by name", in.line, s)
					codeCopy = in.line
				default:
					if codeCopy == 0 {
						codeCopy = in.line
					}
				}
			}
		case "RUN":
			if strings.Contains(in.args, "pip install") {
				if codeCopy != 0 {
					errorf("line %d: pip install after the code is copied (line %d): every code change reinstalls", in.line, codeCopy)
				} else if depsInstall == 0 {
					depsInstall = in.line
				}
			}
		case "USER":
			user, userLine = in.args, in.line
		case "CMD", "ENTRYPOINT":
			cmdLine = in.line
			if !strings.HasPrefix(in.args, "[") {
				errorf("line %d: %s in shell form: signals reach sh, not the app", in.line, in.op)
			}
		}
	}
	if len(from) == 0 {
		errorf("no FROM")
		return
	}
	base := from[len(from)-1].args
	if m := regexp.MustCompile(`^\$\{?(\w+)\}?$`).FindStringSubmatch(base); m != nil {
		base = args[m[1]]
	}
	name := base[strings.LastIndex(base, "/")+1:]
	if !strings.HasPrefix(name, "python:") || !strings.Contains(name, "slim") || strings.HasSuffix(name, ":latest") {
		errorf("base image %q: want a python slim image named by a tag", base)
	}
	if depsCopy == 0 || depsInstall == 0 || depsCopy > depsInstall {
		errorf("want COPY requirements.txt, then RUN pip install (lines %d, %d), before the code", depsCopy, depsInstall)
	}
	if codeCopy == 0 || codeCopy < depsInstall {
		errorf("the code is copied at line %d, want it after the dependencies' install (line %d)", codeCopy, depsInstall)
	}
	uid, gid, _ := strings.Cut(user, ":")
	n, err := strconv.Atoi(uid)
	if err != nil || n < 10000 {
		errorf("USER %q (line %d): want a numeric uid of 10000 or more (Kubernetes' runAsNonRoot needs a number)", user, userLine)
	}
	if g, err := strconv.Atoi(gid); gid != "" && (err != nil || g == 0) {
		errorf("USER %q: want a numeric, non-root group", user)
	}
	if cmdLine == 0 || userLine > cmdLine {
		errorf("USER (line %d) must come before CMD (line %d)", userLine, cmdLine)
	}
}
