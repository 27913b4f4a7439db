// Package ec2fake is a local stand-in for the two EC2 query-API actions the
// aws provider uses, AssociateAddress and DescribeAddresses, plus the instance
// metadata service (IMDSv2). Requests and XML responses follow the EC2 API
// reference and what aws-sdk-go-v2's ec2query (de)serializers produce and read.
//
// Faults it reproduces: associations that become visible in DescribeAddresses
// only after a delay, as EC2's eventual consistency does (SetPropagationDelay);
// throttling, HTTP 503 RequestLimitExceeded, until a time passes (Throttle; EC2
// sends no rate-limit headers, clients back off exponentially); an injected
// error code for the next calls (FailNext); another instance holding the
// address (SetHolder); and Resource.AlreadyAssociated when AllowReassociation
// is false and the address is bound elsewhere.
package ec2fake

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/vip/internal/fakeapi"
)

const xmlns = "http://ec2.amazonaws.com/doc/2016-11-15/"

// Server is the fake EC2 endpoint. All methods are safe for concurrent use.
type Server struct {
	URL       string
	AccessKey string

	srv  *httptest.Server
	imds []*httptest.Server

	mu        sync.Mutex
	addrs     map[string]*address // allocation id -> address
	delay     time.Duration
	gate      fakeapi.Gate
	failCode  string
	failN     int
	nextAssoc int
	stats     Stats
}

// Stats counts what the fake saw.
type Stats struct {
	Associates int
	Throttled  int
	Requests   int
}

type address struct {
	alloc, ip string
	// visible is what DescribeAddresses reports; pending replaces it at due.
	visible, pending string
	due              time.Time
	assoc            string
}

// New starts a fake that accepts requests signed with accessKey and holds the
// given Elastic IPs (allocation id -> public IP), all unassociated.
func New(accessKey string, eips map[string]string) *Server {
	s := &Server{AccessKey: accessKey, addrs: map[string]*address{}, nextAssoc: 1,
		gate: fakeapi.Gate{
			Authorized: fakeapi.SigV4Key(accessKey),
			Unauthorized: func(w http.ResponseWriter) {
				writeErr(w, http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials")
			},
			// EC2 throttles with 503 and no rate-limit headers.
			Limited: func(w http.ResponseWriter) {
				writeErr(w, http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded.")
			},
		},
	}
	for alloc, ip := range eips {
		s.addrs[alloc] = &address{alloc: alloc, ip: ip}
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the API and every IMDS server.
func (s *Server) Close() {
	s.srv.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.imds {
		m.Close()
	}
}

// IMDS starts an instance metadata service for instance id in region and
// returns its endpoint. It requires an IMDSv2 session token, like a hardened
// instance does.
func (s *Server) IMDS(instance, region string) string {
	const tok = "fake-imds-token"
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") == "" {
			http.Error(w, "missing ttl", http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
		fmt.Fprint(w, tok)
	})
	mux.HandleFunc("GET /latest/meta-data/{path...}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Aws-Ec2-Metadata-Token") != tok {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		switch r.PathValue("path") {
		case "instance-id":
			fmt.Fprint(w, instance)
		default:
			http.NotFound(w, r)
		}
	})
	mux.HandleFunc("GET /latest/dynamic/instance-identity/document", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Aws-Ec2-Metadata-Token") != tok {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"accountId": "123456789012", "architecture": "x86_64", "availabilityZone": region + "a",
			"imageId": "ami-0123456789abcdef0", "instanceId": instance, "instanceType": "t3.micro",
			"pendingTime": "2026-01-01T00:00:00Z", "privateIp": "10.0.0.10", "region": region, "version": "2017-09-30",
		})
	})
	m := httptest.NewServer(mux)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.imds = append(s.imds, m)
	return m.URL
}

// SetPropagationDelay makes later associations show in DescribeAddresses only
// after d.
func (s *Server) SetPropagationDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// Throttle answers every request with RequestLimitExceeded until d from now.
func (s *Server) Throttle(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate.Limit.CloseFor(time.Now(), d)
}

// FailNext makes the next n AssociateAddress calls fail with code (HTTP 400).
func (s *Server) FailNext(code string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failCode, s.failN = code, n
}

// SetHolder associates allocation alloc with instance at once ("" disassociates).
func (s *Server) SetHolder(alloc, instance string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.addrs[alloc]
	a.visible, a.pending, a.due = instance, "", time.Time{}
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Requests, st.Throttled = s.gate.Requests, s.gate.RateLimited
	return st
}

func (s *Server) settle(now time.Time) {
	for _, a := range s.addrs {
		if !a.due.IsZero() && !now.Before(a.due) {
			a.visible, a.pending, a.due = a.pending, "", time.Time{}
		}
	}
}

// holder is the instance the address is really bound to (visible or not).
func (a *address) holder() string {
	if !a.due.IsZero() {
		return a.pending
	}
	return a.visible
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	// Only the access key is checked; the SigV4 signature itself is the SDK's business.
	if !s.gate.Pass(w, r, now) {
		return
	}
	if r.Method != http.MethodPost {
		writeErr(w, http.StatusBadRequest, "InvalidAction", "EC2 query requests are POSTs")
		return
	}
	if err := r.ParseForm(); err != nil {
		writeErr(w, http.StatusBadRequest, "MalformedQueryString", err.Error())
		return
	}
	s.settle(now)
	switch r.Form.Get("Action") {
	case "AssociateAddress":
		s.associate(w, r, now)
	case "DescribeAddresses":
		s.describe(w, r)
	default:
		writeErr(w, http.StatusBadRequest, "InvalidAction", "The action "+r.Form.Get("Action")+" is not valid for this web service.")
	}
}

func (s *Server) associate(w http.ResponseWriter, r *http.Request, now time.Time) {
	if s.failN > 0 {
		s.failN--
		writeErr(w, http.StatusBadRequest, s.failCode, "injected failure")
		return
	}
	a, ok := s.addrs[r.Form.Get("AllocationId")]
	if !ok {
		writeErr(w, http.StatusBadRequest, "InvalidAllocationID.NotFound", "The allocation ID '"+r.Form.Get("AllocationId")+"' does not exist")
		return
	}
	inst := r.Form.Get("InstanceId")
	if inst == "" {
		writeErr(w, http.StatusBadRequest, "MissingParameter", "Either instance ID or network interface ID must be specified")
		return
	}
	if cur := a.holder(); cur != "" && cur != inst && r.Form.Get("AllowReassociation") != "true" {
		writeErr(w, http.StatusBadRequest, "Resource.AlreadyAssociated", "resource "+a.alloc+" is already associated with associate-id "+a.assoc)
		return
	}
	s.stats.Associates++
	a.assoc = fmt.Sprintf("eipassoc-%017x", s.nextAssoc)
	s.nextAssoc++
	if s.delay > 0 {
		a.pending, a.due = inst, now.Add(s.delay)
	} else {
		a.visible, a.pending, a.due = inst, "", time.Time{}
	}
	writeXML(w, struct {
		XMLName       xml.Name `xml:"AssociateAddressResponse"`
		Xmlns         string   `xml:"xmlns,attr"`
		RequestID     string   `xml:"requestId"`
		Return        bool     `xml:"return"`
		AssociationID string   `xml:"associationId"`
	}{Xmlns: xmlns, RequestID: "req-associate", Return: true, AssociationID: a.assoc})
}

type item struct {
	PublicIP           string `xml:"publicIp"`
	AllocationID       string `xml:"allocationId"`
	Domain             string `xml:"domain"`
	InstanceID         string `xml:"instanceId,omitempty"`
	AssociationID      string `xml:"associationId,omitempty"`
	NetworkInterfaceID string `xml:"networkInterfaceId,omitempty"`
	PrivateIPAddress   string `xml:"privateIpAddress,omitempty"`
	PublicIPv4Pool     string `xml:"publicIpv4Pool"`
	NetworkBorderGroup string `xml:"networkBorderGroup"`
}

func (s *Server) describe(w http.ResponseWriter, r *http.Request) {
	var want []string
	for i := 1; ; i++ {
		v := r.Form.Get(fmt.Sprintf("AllocationId.%d", i))
		if v == "" {
			break
		}
		want = append(want, v)
	}
	var items []item
	for _, id := range want {
		a, ok := s.addrs[id]
		if !ok {
			writeErr(w, http.StatusBadRequest, "InvalidAllocationID.NotFound", "The allocation ID '"+id+"' does not exist")
			return
		}
		it := item{PublicIP: a.ip, AllocationID: a.alloc, Domain: "vpc", PublicIPv4Pool: "amazon", NetworkBorderGroup: "eu-central-1"}
		if a.visible != "" {
			it.InstanceID, it.AssociationID = a.visible, a.assoc
			it.NetworkInterfaceID = "eni-" + strings.TrimPrefix(a.visible, "i-")
			it.PrivateIPAddress = "10.0.0.10"
		}
		items = append(items, it)
	}
	writeXML(w, struct {
		XMLName   xml.Name `xml:"DescribeAddressesResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		RequestID string   `xml:"requestId"`
		Items     []item   `xml:"addressesSet>item"`
	}{Xmlns: xmlns, RequestID: "req-describe", Items: items})
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	type e struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	_ = xml.NewEncoder(w).Encode(struct {
		XMLName   xml.Name `xml:"Response"`
		Errors    []e      `xml:"Errors>Error"`
		RequestID string   `xml:"RequestID"`
	}{Errors: []e{{code, msg}}, RequestID: "req-error"})
}

func writeXML(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(v)
}
