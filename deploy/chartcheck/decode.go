// Package chartcheck checks Kubernetes manifests offline, the way an API
// server and an admission controller would, so that a chart that renders
// can also be applied: every object decodes strictly into the Kubernetes
// API types, every pod meets the restricted Pod Security Standard, and
// Services, probes, ports and environment agree with what the Tollgate
// binary really serves.
//
// It never talks to a cluster and never downloads a schema.
package chartcheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/validation"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Object is one decoded manifest document.
type Object struct {
	// Source is the template that produced the document (helm template's
	// "# Source:" comment), or "document N".
	Source string
	GVK    schema.GroupVersionKind
	Name   string
	// Object is the typed object: a k8s.io/api type, or *ServiceMonitor.
	Object runtime.Object
}

// String names the object for messages.
func (o Object) String() string { return fmt.Sprintf("%s %s (%s)", o.GVK.Kind, o.Name, o.Source) }

var (
	scheme  = runtime.NewScheme()
	decoder *kjson.Serializer
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme, rbacv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	decoder = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
}

// Decode splits a multi-document YAML manifest and decodes every document
// strictly into its Kubernetes API type: unknown or duplicate fields,
// wrong types, unknown kinds and invalid names are errors. Documents that
// hold only comments are skipped.
func Decode(manifest []byte) ([]Object, error) {
	r := kyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	var objs []Object
	var errs []error
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("split manifest: %w", err)
		}
		source := sourceOf(doc, n)
		if isEmpty(doc) {
			continue
		}
		o, err := decodeOne(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
			continue
		}
		o.Source = source
		objs = append(objs, o)
	}
	return objs, errors.Join(errs...)
}

func decodeOne(doc []byte) (Object, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return Object{}, fmt.Errorf("parse: %w", err)
	}
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil {
		return Object{}, fmt.Errorf("apiVersion %q: %w", tm.APIVersion, err)
	}
	gvk := gv.WithKind(tm.Kind)
	o := Object{GVK: gvk, Name: tm.Metadata.Name}
	switch {
	case gvk == serviceMonitorGVK:
		sm, err := decodeServiceMonitor(doc)
		if err != nil {
			return o, err
		}
		o.Object = sm
	case scheme.Recognizes(gvk):
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return o, fmt.Errorf("decode %s %s: %w", gvk.Kind, tm.Metadata.Name, err)
		}
		o.Object = obj
	default:
		return o, fmt.Errorf("%s is not a kind this checker knows (apiVersion %q)", tm.Kind, tm.APIVersion)
	}
	if msgs := validation.IsDNS1123Subdomain(o.Name); len(msgs) > 0 {
		return o, fmt.Errorf("%s name %q: %s", gvk.Kind, o.Name, strings.Join(msgs, "; "))
	}
	return o, nil
}

// sourceOf returns the "# Source: path" comment helm template puts at the
// top of each document.
func sourceOf(doc []byte, n int) string {
	for line := range strings.SplitSeq(string(doc), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source: "); ok {
			return s
		}
	}
	return fmt.Sprintf("document %d", n)
}

func isEmpty(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		l := strings.TrimSpace(line)
		if l != "" && l != "---" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// serviceMonitorGVK is the Prometheus Operator's ServiceMonitor, a custom
// resource: k8s.io/api has no type for it, so the fields the chart uses
// are declared below (from the CRD's OpenAPI schema) and decoded strictly.
var serviceMonitorGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}

// ServiceMonitor is the subset of monitoring.coreos.com/v1 ServiceMonitor
// the chart renders. A field outside it is reported as unknown.
type ServiceMonitor struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   metaSubset         `json:"metadata"`
	Spec       ServiceMonitorSpec `json:"spec"`
}

type metaSubset struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ServiceMonitorSpec is the spec of a ServiceMonitor.
type ServiceMonitorSpec struct {
	NamespaceSelector struct {
		Any        bool     `json:"any,omitempty"`
		MatchNames []string `json:"matchNames,omitempty"`
	} `json:"namespaceSelector"`
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	Endpoints []struct {
		Port     string `json:"port"`
		Path     string `json:"path,omitempty"`
		Interval string `json:"interval,omitempty"`
	} `json:"endpoints"`
}

// GetObjectKind implements runtime.Object.
func (*ServiceMonitor) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (m *ServiceMonitor) DeepCopyObject() runtime.Object {
	c := *m
	return &c
}

func decodeServiceMonitor(doc []byte) (*ServiceMonitor, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("parse ServiceMonitor: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var sm ServiceMonitor
	if err := dec.Decode(&sm); err != nil {
		return nil, fmt.Errorf("decode ServiceMonitor: %w", err)
	}
	if len(sm.Spec.Endpoints) == 0 || len(sm.Spec.Selector.MatchLabels) == 0 {
		return nil, errors.New("ServiceMonitor needs a selector and at least one endpoint")
	}
	for _, e := range sm.Spec.Endpoints {
		if e.Port == "" {
			return nil, errors.New("ServiceMonitor endpoint without a port name")
		}
	}
	return &sm, nil
}
