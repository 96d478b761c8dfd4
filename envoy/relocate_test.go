package envoy

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestRelocate(t *testing.T) {
	b, err := LoadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = Relocate(b, Addresses{
		Listen:    ":18080",
		Admin:     "127.0.0.1:19901",
		Endpoints: map[string]string{"issuer": "127.0.0.1:18081", "authz": ":19001"},
	})
	if err != nil {
		t.Fatalf("Relocate = %v", err)
	}
	if err := Validate(b); err != nil {
		t.Fatalf("relocated bootstrap does not validate: %v", err)
	}
	addr := func(host string, port uint32) string {
		return net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
	}
	l := b.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress()
	if got := addr(l.GetAddress(), l.GetPortValue()); got != "0.0.0.0:18080" {
		t.Errorf("listener = %s, want 0.0.0.0:18080 (an empty host listens everywhere)", got)
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress(); addr(a.GetAddress(), a.GetPortValue()) != "127.0.0.1:19901" {
		t.Errorf("admin = %v, want 127.0.0.1:19901", a)
	}
	want := map[string]string{"issuer": "127.0.0.1:18081", "authz": "127.0.0.1:19001", "books": "127.0.0.1:8082"}
	for _, cl := range b.GetStaticResources().GetClusters() {
		sa := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if got := addr(sa.GetAddress(), sa.GetPortValue()); got != want[cl.GetName()] {
			t.Errorf("cluster %s endpoint = %s, want %s", cl.GetName(), got, want[cl.GetName()])
		}
	}

	for _, tc := range []struct {
		name string
		a    Addresses
		want string
	}{
		{"unknown cluster", Addresses{Endpoints: map[string]string{"nope": "127.0.0.1:1"}}, `no cluster "nope"`},
		{"bad port", Addresses{Listen: "127.0.0.1:http"}, "bad port"},
		{"no port", Addresses{Admin: "127.0.0.1"}, "missing port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := LoadFile("envoy.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if err := Relocate(b, tc.a); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Relocate(%+v) = %v, want an error containing %q", tc.a, err, tc.want)
			}
		})
	}
}
