package hostd

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// maxBodyBytes bounds a request body; the largest is a domain with secrets.
const maxBodyBytes = 1 << 20

// handler routes the local API. Handlers only decode, call the Daemon and
// encode; errors become HTTP answers in writeError alone.
func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		return d.Status(), nil
	}))
	mux.HandleFunc("GET /v1/domains", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		return d.Domains(), nil
	}))
	mux.HandleFunc("POST /v1/domains", d.api(http.StatusCreated, func(r *http.Request) (any, error) {
		var spec DomainSpec
		if err := decodeBody(r, &spec); err != nil {
			return nil, err
		}
		return d.AddDomain(spec)
	}))
	mux.HandleFunc("GET /v1/domains/{d}", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		return d.Domain(r.PathValue("d"))
	}))
	mux.HandleFunc("PATCH /v1/domains/{d}", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		var p DomainPatch
		if err := decodeBody(r, &p); err != nil {
			return nil, err
		}
		return d.EditDomain(r.PathValue("d"), p)
	}))
	mux.HandleFunc("DELETE /v1/domains/{d}", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		return struct{}{}, d.RemoveDomain(r.PathValue("d"))
	}))
	mux.HandleFunc("GET /v1/domains/{d}/images", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		refresh, err := boolQuery(r, "refresh")
		if err != nil {
			return nil, err
		}
		return d.Images(r.Context(), r.PathValue("d"), refresh)
	}))
	mux.HandleFunc("POST /v1/domains/{d}/mount", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		var m MountRequest
		if err := decodeBody(r, &m); err != nil {
			return nil, err
		}
		return d.Mount(r.Context(), r.PathValue("d"), m.Mountpoint)
	}))
	mux.HandleFunc("DELETE /v1/domains/{d}/mount", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		return d.Unmount(r.PathValue("d"))
	}))
	mux.HandleFunc("GET /v1/nbd/exports", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		return d.Exports(r.Context()), nil
	}))
	mux.HandleFunc("POST /v1/importImage", d.api(http.StatusAccepted, func(r *http.Request) (any, error) {
		var req ImportRequest
		if err := decodeBody(r, &req); err != nil {
			return nil, err
		}
		j, err := d.StartImport(r.Context(), req)
		return JobAnswer{Job: j}, err
	}))
	mux.HandleFunc("POST /v1/exportImage", d.api(http.StatusAccepted, func(r *http.Request) (any, error) {
		var req ExportRequest
		if err := decodeBody(r, &req); err != nil {
			return nil, err
		}
		j, err := d.StartExport(r.Context(), req)
		return JobAnswer{Job: j}, err
	}))
	mux.HandleFunc("GET /v1/jobs", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		return d.Jobs(), nil
	}))
	mux.HandleFunc("GET /v1/jobs/{id}", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		return d.Job(r.PathValue("id"))
	}))
	mux.HandleFunc("POST /v1/jobs/{id}/cancel", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		return d.CancelJob(r.Context(), r.PathValue("id"))
	}))
	mux.HandleFunc("GET /v1/jobs/{id}/wait", d.api(http.StatusOK, func(r *http.Request) (any, error) {
		timeout := 30 * time.Second
		if s := r.URL.Query().Get("timeout"); s != "" {
			t, err := time.ParseDuration(s)
			if err != nil || t < 0 {
				return nil, badRequest("invalid timeout=%q: want a duration such as 30s (at most %s)", s, maxWait)
			}
			timeout = t
		}
		return d.WaitJob(r.Context(), r.PathValue("id"), timeout)
	}))
	mux.HandleFunc("/", d.api(0, func(r *http.Request) (any, error) {
		return nil, notFound("no route %s %s", r.Method, r.URL.Path)
	}))
	return d.logRequests(mux)
}

// api adapts a handler function: JSON answer with status ok, or the error.
func (d *Daemon) api(ok int, fn func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		if err != nil {
			d.writeError(w, r, err)
			return
		}
		writeJSON(w, ok, v)
	}
}

// writeError is the one place where errors become HTTP statuses.
func (d *Daemon) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := classify(err)
	if status == http.StatusInternalServerError {
		d.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, errorBody{Error: err.Error(), Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: "encode answer: " + err.Error(), Code: CodeInternal})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decodeBody reads one JSON object into v, refusing unknown fields so a
// typo is an error rather than a silent default.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBodyBytes+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return badRequest("empty request body: want a JSON object")
		}
		return badRequest("invalid JSON body: %v", err)
	}
	if dec.More() {
		return badRequest("invalid JSON body: more than one value")
	}
	return nil
}

func boolQuery(r *http.Request, key string) (bool, error) {
	switch v := r.URL.Query().Get(key); v {
	case "", "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	default:
		return false, badRequest("invalid %s=%q: want 1 or 0", key, v)
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// logRequests logs each request's method, path, status and duration at debug.
// Bodies carry secrets and are never logged.
func (d *Daemon) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		r.Body = http.MaxBytesReader(rec, r.Body, maxBodyBytes)
		next.ServeHTTP(rec, r)
		d.log.LogAttrs(r.Context(), slog.LevelDebug, "api request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", rec.status), slog.Duration("duration", time.Since(start)))
	})
}
