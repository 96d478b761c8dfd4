package authz

import (
	"errors"
	"fmt"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
)

// Bounds on CEL policies: how long an expression may be, how many
// compiled programs are kept, and how much one evaluation may cost (in
// cel-go's cost units, about one per operation), so that a hostile
// expression such as nested comprehensions over a large claim cannot
// stall a check.
const (
	maxCELBytes    = 4 << 10
	maxCELPrograms = 1024
	celCostLimit   = 10000
)

// celEnv declares what a policy expression sees.
var celEnv = func() *cel.Env {
	env, err := cel.NewEnv(
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("roles", cel.ListType(cel.StringType)),
		cel.Variable("scopes", cel.ListType(cel.StringType)),
		cel.Variable("issuer", cel.StringType),
		cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		panic(err)
	}
	return env
}()

// celProgram is one compiled policy expression.
type celProgram struct {
	src string
	prg cel.Program
}

// celPrograms caches compiled expressions, and compile errors, by
// source text. It is bounded: when full, an arbitrary entry makes room.
type celPrograms struct {
	mu sync.RWMutex
	m  map[string]celCompiled
}

type celCompiled struct {
	prg *celProgram
	err error
}

func newCELPrograms() *celPrograms { return &celPrograms{m: map[string]celCompiled{}} }

// get returns the program for src, compiling it the first time.
func (c *celPrograms) get(src string) (*celProgram, error) {
	c.mu.RLock()
	e, ok := c.m[src]
	c.mu.RUnlock()
	if ok {
		return e.prg, e.err
	}
	e.prg, e.err = compileCEL(src)
	c.mu.Lock()
	if len(c.m) >= maxCELPrograms {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[src] = e
	c.mu.Unlock()
	return e.prg, e.err
}

func (c *celPrograms) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// compileCEL compiles a policy expression, which must return a bool.
func compileCEL(src string) (*celProgram, error) {
	if src == "" {
		return nil, errors.New("empty expression")
	}
	if len(src) > maxCELBytes {
		return nil, fmt.Errorf("expression is %d bytes, over %d", len(src), maxCELBytes)
	}
	ast, iss := celEnv.Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("%q does not compile: %w", truncate(src, 128), iss.Err())
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return nil, fmt.Errorf("%q returns %s, not bool", truncate(src, 128), ast.OutputType())
	}
	// An expression whose worst case, given the bounds authz enforces on
	// roles and scopes, is within the limit runs without runtime cost
	// tracking (which costs more than a simple expression itself); any
	// other runs with it and stops when it reaches the limit.
	var opts []cel.ProgramOption
	if est, err := celEnv.EstimateCost(ast, celSizes{}); err != nil || est.Max > celCostLimit {
		opts = append(opts, cel.CostLimit(celCostLimit), cel.InterruptCheckFrequency(100))
	}
	prg, err := celEnv.Program(ast, opts...)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", truncate(src, 128), err)
	}
	return &celProgram{src: src, prg: prg}, nil
}

// celSizes bounds the sizes of the variables whose sizes authz enforces
// (newIdentity refuses more roles or scopes, or longer ones); every other
// size is unknown, which makes any expression that depends on one
// estimate over the limit.
type celSizes struct{}

func (celSizes) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	p := n.Path()
	switch {
	case len(p) == 1 && p[0] == "roles":
		return &checker.SizeEstimate{Min: 0, Max: maxRoles}
	case len(p) == 1 && p[0] == "scopes":
		return &checker.SizeEstimate{Min: 0, Max: maxScopes}
	case len(p) == 2 && p[0] == "roles" && p[1] == "@items":
		return &checker.SizeEstimate{Min: 1, Max: maxRoleLen}
	case len(p) == 2 && p[0] == "scopes" && p[1] == "@items":
		return &checker.SizeEstimate{Min: 1, Max: maxScopeLen}
	case len(p) == 1 && p[0] == "issuer":
		return &checker.SizeEstimate{Min: 1, Max: maxIssuerNameLen}
	}
	return nil
}

func (celSizes) EstimateCallCost(function, overloadID string, target *checker.AstNode, args []checker.AstNode) *checker.CallEstimate {
	return nil
}

// requestInfo is what a policy sees of the request being authorized.
// It is passed by pointer but never kept, so it stays on the stack.
type requestInfo struct {
	method, path, host string
	scheme             string       // http or https, as the gateway saw it (for DPoP's htu)
	headers            headerLister // listed only if an expression asks
}

// headerLister lists a request's headers by lowercase name.
type headerLister interface {
	all() map[string]string
}

// celActivation resolves a policy's variables without building a map:
// the identity's values were converted once, when it was verified.
type celActivation struct {
	id  *identity
	req requestInfo
}

func (a *celActivation) ResolveName(name string) (any, bool) {
	switch name {
	case "claims":
		return a.id.celValues().claims, true
	case "roles":
		return a.id.celValues().roles, true
	case "scopes":
		return a.id.celValues().scopes, true
	case "issuer":
		return a.id.issuer.name, true
	case "request":
		var h map[string]string
		if a.req.headers != nil {
			h = a.req.headers.all()
		}
		return map[string]any{"method": a.req.method, "path": a.req.path, "host": a.req.host, "headers": h}, true
	}
	return nil, false
}

func (a *celActivation) Parent() interpreter.Activation { return nil }

// celValues are an identity's CEL variables, converted once.
type celValues struct {
	claims, roles, scopes ref.Val
}

// allows evaluates the expression for id and req; nil means it was true.
func (p *celProgram) allows(id *identity, req *requestInfo) error {
	out, _, err := p.prg.Eval(&celActivation{id: id, req: *req})
	if err != nil {
		return fmt.Errorf("cel %q: %w", truncate(p.src, 128), err)
	}
	if b, ok := out.Value().(bool); !ok || !b {
		return fmt.Errorf("cel %q is false", truncate(p.src, 128))
	}
	return nil
}
