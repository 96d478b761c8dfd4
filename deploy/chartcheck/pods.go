package chartcheck

import (
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// Pod is a pod template (or a bare Pod) found in the manifests.
type Pod struct {
	Owner Object
	Meta  *metav1.ObjectMeta
	Spec  *corev1.PodSpec
}

// String names the pod by its owner.
func (p Pod) String() string { return p.Owner.String() }

// Pods returns every pod spec in objs: bare Pods (helm test hooks) and the
// templates of Deployments, StatefulSets, DaemonSets, Jobs and CronJobs.
func Pods(objs []Object) []Pod {
	var pods []Pod
	for _, o := range objs {
		switch v := o.Object.(type) {
		case *corev1.Pod:
			pods = append(pods, Pod{o, &v.ObjectMeta, &v.Spec})
		case *appsv1.Deployment:
			pods = append(pods, Pod{o, &v.Spec.Template.ObjectMeta, &v.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			pods = append(pods, Pod{o, &v.Spec.Template.ObjectMeta, &v.Spec.Template.Spec})
		case *appsv1.DaemonSet:
			pods = append(pods, Pod{o, &v.Spec.Template.ObjectMeta, &v.Spec.Template.Spec})
		case *batchv1.Job:
			pods = append(pods, Pod{o, &v.Spec.Template.ObjectMeta, &v.Spec.Template.Spec})
		case *batchv1.CronJob:
			pods = append(pods, Pod{o, &v.Spec.JobTemplate.Spec.Template.ObjectMeta, &v.Spec.JobTemplate.Spec.Template.Spec})
		}
	}
	return pods
}

var restricted = func() policy.Evaluator {
	e, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		panic(err)
	}
	return e
}()

// CheckRestricted evaluates the pod with the Kubernetes Pod Security
// Admission checks of the restricted level, latest version: what a
// namespace labelled pod-security.kubernetes.io/enforce=restricted admits.
func CheckRestricted(p Pod) error {
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	agg := policy.AggregateCheckResults(restricted.EvaluatePod(lv, p.Meta, p.Spec))
	if agg.Allowed {
		return nil
	}
	var errs []error
	for i, reason := range agg.ForbiddenReasons {
		errs = append(errs, fmt.Errorf("%s: not restricted: %s (%s)", p, reason, agg.ForbiddenDetails[i]))
	}
	return errors.Join(errs...)
}

// allContainers returns the init containers (native sidecars included)
// and the containers of spec.
func allContainers(spec *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range spec.InitContainers {
		cs = append(cs, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		cs = append(cs, &spec.Containers[i])
	}
	return cs
}

// CheckHardening asserts what the chart promises beyond the restricted
// standard: no service account token, a read-only root filesystem,
// resources on every container, pinned images, valid names.
func CheckHardening(p Pod) error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", p, fmt.Sprintf(format, args...)))
	}
	if a := p.Spec.AutomountServiceAccountToken; a == nil || *a {
		fail("automountServiceAccountToken must be false")
	}
	for _, c := range allContainers(p.Spec) {
		if msgs := validation.IsDNS1123Label(c.Name); len(msgs) > 0 {
			fail("container name %q: %s", c.Name, strings.Join(msgs, "; "))
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			fail("container %s: readOnlyRootFilesystem must be true", c.Name)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			fail("container %s: needs a memory request and limit", c.Name)
		}
		if c.Resources.Requests.Cpu().IsZero() {
			fail("container %s: needs a CPU request", c.Name)
		}
		if _, tag, ok := strings.Cut(lastSegment(c.Image), ":"); !ok || tag == "" || tag == "latest" {
			fail("container %s: image %q is not pinned to a tag", c.Name, c.Image)
		}
		for _, port := range c.Ports {
			if port.Name == "" {
				continue
			}
			if msgs := validation.IsValidPortName(port.Name); len(msgs) > 0 {
				fail("container %s: port name %q: %s", c.Name, port.Name, strings.Join(msgs, "; "))
			}
		}
		for _, e := range c.Env {
			if msgs := validation.IsEnvVarName(e.Name); len(msgs) > 0 {
				fail("container %s: env %q: %s", c.Name, e.Name, strings.Join(msgs, "; "))
			}
		}
	}
	return errors.Join(errs...)
}

func lastSegment(image string) string {
	if i := strings.LastIndex(image, "/"); i >= 0 {
		return image[i+1:]
	}
	return image
}
