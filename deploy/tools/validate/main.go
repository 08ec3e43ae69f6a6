// Command validate checks Custos deployment files with the same Go libraries the real tools use:
//
//	validate compose FILE [--profile P]...   load with compose-go (the loader of `docker compose`),
//	                                          which validates against the Compose specification schema
//	validate operator FILE...                 strictly decode ServiceMonitor / PrometheusRule / PodMonitor
//	                                          documents into the Prometheus Operator's own API types
//
// Exit 0 when everything is valid, 1 with one line per problem otherwise.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: validate compose FILE [--profile P]... | validate operator FILE...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "compose":
		err = validateCompose(os.Args[2:])
	case "operator":
		err = validateOperator(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "validate: unknown mode %q (compose or operator)\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func validateCompose(args []string) error {
	var files, profiles []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--profile" && i+1 < len(args) {
			profiles = append(profiles, args[i+1])
			i++
			continue
		}
		files = append(files, args[i])
	}
	opts, err := cli.NewProjectOptions(files,
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	names := project.ServiceNames()
	fmt.Printf("compose: %s valid; services (profiles %v): %s\n", strings.Join(files, ","), profiles,
		strings.Join(names, " "))
	return nil
}

// decodeStrict rejects unknown fields, so a misspelt key fails instead of being silently dropped.
func decodeStrict(doc []byte, into any) error {
	return yaml.UnmarshalStrict(doc, into)
}

func validateOperator(files []string) error {
	var problems []string
	checked := 0
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		reader := k8syaml.NewYAMLReader(bufio.NewReader(f))
		for {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				f.Close()
				return fmt.Errorf("%s: %w", file, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var meta struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", file, err))
				continue
			}
			var target any
			switch meta.Kind {
			case "ServiceMonitor":
				target = &monitoringv1.ServiceMonitor{}
			case "PodMonitor":
				target = &monitoringv1.PodMonitor{}
			case "PrometheusRule":
				target = &monitoringv1.PrometheusRule{}
			default:
				continue
			}
			checked++
			if err := decodeStrict(doc, target); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %s/%s: %v", file, meta.Kind, meta.Metadata.Name, err))
				continue
			}
			if err := checkOperatorSemantics(target); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %s/%s: %v", file, meta.Kind, meta.Metadata.Name, err))
			}
		}
		f.Close()
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	fmt.Printf("operator: %d Prometheus Operator objects valid\n", checked)
	return nil
}

// checkOperatorSemantics covers what the CRD schema requires beyond field names and types.
func checkOperatorSemantics(obj any) error {
	switch o := obj.(type) {
	case *monitoringv1.ServiceMonitor:
		if len(o.Spec.Endpoints) == 0 {
			return errors.New("spec.endpoints is empty")
		}
		if o.Spec.Selector.MatchLabels == nil && len(o.Spec.Selector.MatchExpressions) == 0 {
			return errors.New("spec.selector selects nothing")
		}
	case *monitoringv1.PrometheusRule:
		if len(o.Spec.Groups) == 0 {
			return errors.New("spec.groups is empty")
		}
		for _, g := range o.Spec.Groups {
			for _, r := range g.Rules {
				if (r.Alert == "") == (r.Record == "") {
					return fmt.Errorf("group %s: each rule needs exactly one of alert or record", g.Name)
				}
				if r.Expr.String() == "" {
					return fmt.Errorf("group %s: rule %s%s has no expr", g.Name, r.Alert, r.Record)
				}
			}
		}
	}
	return nil
}
