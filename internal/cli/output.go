package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Output formats.
const (
	formatTable = "table"
	formatJSON  = "json"
)

// column is one column of a list table: header text and the resource key it shows.
type column struct {
	header string
	key    string
	format func(any) string // nil: formatValue
}

func col(key string) column { return column{header: key, key: key} }

// decodeObject decodes a JSON object keeping numbers as written.
func decodeObject(raw json.RawMessage) (map[string]any, error) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("answer is not a JSON object: %w", err)
	}
	return m, nil
}

// decodeList decodes a JSON array of objects keeping numbers as written.
func decodeList(raw json.RawMessage) ([]map[string]any, error) {
	var l []map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("answer is not a JSON list of objects: %w", err)
	}
	return l, nil
}

// formatValue renders one field value for a table cell: null is empty,
// booleans are True/False (as the neutron client shows them), lists of scalars
// are joined with ", ", anything else nested is compact JSON.
func formatValue(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case bool:
		if v {
			return "True"
		}
		return "False"
	case json.Number:
		return v.String()
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			switch e.(type) {
			case map[string]any, []any:
				return compactJSON(v)
			}
			parts = append(parts, formatValue(e))
		}
		return strings.Join(parts, ", ")
	default:
		return compactJSON(v)
	}
}

// formatAlive renders an agent's liveness like the neutron client: ":-)" or "xxx".
func formatAlive(v any) string {
	switch v {
	case true:
		return ":-)"
	case false:
		return "xxx"
	}
	return formatValue(v)
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// printJSON prints raw indented by two spaces, keys in the order the server sent them.
func printJSON(w io.Writer, raw json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// cell makes a value safe for one tabwriter cell.
func cell(s string) string {
	return strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(s)
}

// table collects tab-separated lines and writes them with aligned columns
// and no trailing blanks.
type table struct {
	w   io.Writer
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func newTable(w io.Writer) *table {
	t := &table{w: w}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	var out bytes.Buffer
	for _, l := range strings.SplitAfter(t.buf.String(), "\n") {
		if l == "" {
			continue
		}
		out.WriteString(strings.TrimRight(l, " \n"))
		out.WriteByte('\n')
	}
	_, err := t.w.Write(out.Bytes())
	return err
}

// printTable prints rows as a table with a header row and aligned columns.
func printTable(w io.Writer, cols []column, rows []map[string]any) error {
	t := newTable(w)
	hdr := make([]string, len(cols))
	for i, c := range cols {
		hdr[i] = c.header
	}
	t.row(hdr...)
	for _, r := range rows {
		vals := make([]string, len(cols))
		for i, c := range cols {
			f := c.format
			if f == nil {
				f = formatValue
			}
			vals[i] = f(r[c.key])
		}
		t.row(vals...)
	}
	return t.flush()
}

// printFields prints one resource as a vertical Field/Value table, fields sorted.
func printFields(w io.Writer, obj map[string]any) error {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t := newTable(w)
	t.row("Field", "Value")
	for _, k := range keys {
		t.row(k, formatValue(obj[k]))
	}
	return t.flush()
}
