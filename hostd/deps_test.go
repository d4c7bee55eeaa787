package hostd

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/glancegw/glancegw"

// allowedDeps holds the import arrows of docs/DESIGN.md: which of our
// packages each package may import. A sub-package not listed follows its
// nearest listed parent and may also import that parent.
var allowedDeps = map[string][]string{
	"glance":         {},
	"glance/inspect": {},
	"cache":          {},
	"fs":             {"cache"},
	"nbd":            {"cache"},
	"hostd/transfer": {"cache", "glance", "glance/inspect"},
	"hostd":          {"cache", "glance", "glance/inspect", "fs", "nbd", "hostd/transfer"},
	"cmd/glancegw":   {"hostd"},
	"test":           {"*"},
}

// rule returns the allowed imports of pkg (a path inside the module).
func rule(pkg string) (allowed []string, ok bool) {
	for p := pkg; p != "."; p = filepath.Dir(p) {
		if a, ok := allowedDeps[p]; ok {
			if p != pkg {
				a = append(append([]string(nil), a...), p)
			}
			return a, true
		}
	}
	return nil, false
}

func TestImportArrows(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	problems, files, err := importProblems(root)
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("parsed only %d files under %s; is the walk broken?", files, root)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestImportArrowsCatch feeds importProblems a small tree that breaks each
// rule once.
func TestImportArrowsCatch(t *testing.T) {
	root := t.TempDir()
	write := func(path, src string) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	imp := func(pkg string, deps ...string) string {
		src := "package " + filepath.Base(pkg) + "\nimport (\n"
		for _, d := range deps {
			src += "\t_ \"" + module + "/" + d + "\"\n"
		}
		return src + "\t_ \"fmt\"\n)\n"
	}
	write("cache/cache.go", imp("cache"))
	write("fs/ok.go", imp("fs", "cache"))
	write("fs/bad.go", imp("fs", "glance"))                     // fs may import only cache
	write("glance/g_test.go", imp("glance", "cache/cachetest")) // fine: the conformance suite
	write("glance/bad_test.go", imp("glance", "hostd"))         // not fine even in a test
	write("nbd/n.go", imp("nbd", "cmd/glancegw"))               // nobody imports cmd
	write("hostd/h.go", imp("hostd", "test/harness"))           // only test imports test
	write("cmd/glancegw/m.go", imp("main", "hostd", "fs"))      // cmd only hostd
	write("test/e2e/e.go", imp("e2e", "test/harness", "hostd", "fs"))
	write("tools/x.go", imp("x", "cache")) // no rule
	problems, _, err := importProblems(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"fs/bad.go imports glance", "glance/bad_test.go imports hostd", "nbd/n.go imports cmd/glancegw",
		"hostd/h.go imports test/harness", "cmd/glancegw/m.go imports fs", "tools/x.go: package tools has no import rule"}
	if len(problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(problems), len(want), strings.Join(problems, "\n"))
	}
	for _, w := range want {
		found := false
		for _, p := range problems {
			found = found || strings.Contains(p, w)
		}
		if !found {
			t.Errorf("missed %q in:\n%s", w, strings.Join(problems, "\n"))
		}
	}
}

// importProblems checks every Go file under root against allowedDeps.
func importProblems(root string) (problems []string, files int, err error) {
	err = filepath.WalkDir(root, func(path string, de os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := de.Name()
		if de.IsDir() && path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
			return filepath.SkipDir
		}
		if de.IsDir() || !strings.HasSuffix(name, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		where := rel + "/" + name
		isTest := strings.HasSuffix(name, "_test.go")
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			problems = append(problems, err.Error())
			return nil
		}
		files++
		allowed, known := rule(rel)
		for _, im := range f.Imports {
			ip, _ := strconv.Unquote(im.Path.Value)
			if ip != module && !strings.HasPrefix(ip, module+"/") {
				continue
			}
			dep := strings.TrimPrefix(strings.TrimPrefix(ip, module), "/")
			inTestTree := rel == "test" || strings.HasPrefix(rel, "test/")
			switch {
			case dep == "cmd" || strings.HasPrefix(dep, "cmd/"):
				problems = append(problems, where+" imports "+dep+": nobody imports cmd")
			case (dep == "test" || strings.HasPrefix(dep, "test/")) && !inTestTree:
				problems = append(problems, where+" imports "+dep+": only test imports test")
			case !known:
				problems = append(problems, where+": package "+rel+" has no import rule; add it to allowedDeps")
			case isTest && (dep == rel || strings.HasPrefix(dep, rel+"/") || dep == "cache" || dep == "cache/cachetest"):
				// Tests may use their own package's sub-packages and the
				// BlockSource conformance suite (cache/cachetest).
			case !allows(allowed, dep):
				problems = append(problems, where+" imports "+dep+"; "+rel+" may import only ["+strings.Join(allowed, " ")+"]")
			}
		}
		return nil
	})
	return problems, files, err
}

func allows(allowed []string, dep string) bool {
	for _, a := range allowed {
		if a == "*" || a == dep {
			return true
		}
	}
	return false
}

func TestImportRuleTable(t *testing.T) {
	tests := []struct {
		pkg  string
		want []string
		ok   bool
	}{
		{"glance", nil, true},
		{"cache/cachetest", []string{"cache"}, true},
		{"hostd/transfer", []string{"cache", "glance", "glance/inspect"}, true},
		{"hostd/other", []string{"cache", "fs", "glance", "glance/inspect", "hostd", "hostd/transfer", "nbd"}, true},
		{"test/e2e", []string{"*", "test"}, true},
		{"tools", nil, false},
	}
	for _, tt := range tests {
		got, ok := rule(tt.pkg)
		sort.Strings(got)
		sort.Strings(tt.want)
		if ok != tt.ok || strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("rule(%s) = %v, %v; want %v, %v", tt.pkg, got, ok, tt.want, tt.ok)
		}
	}
}
