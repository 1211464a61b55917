{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "antenna-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name: "<release>-<chart>", or just the release name when it
already contains the chart name. Truncated to 63 characters (DNS label).
*/}}
{{- define "antenna-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the metrics Service: the fullname cut so that "-metrics" still fits in 63 characters.
*/}}
{{- define "antenna-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "antenna-operator.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "antenna-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "antenna-operator.labels" -}}
helm.sh/chart: {{ include "antenna-operator.chart" . }}
{{ include "antenna-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: antenna
{{- end }}

{{/*
Labels that select the operator Pods; they never change after the first install
(Deployment selectors are immutable).
*/}}
{{- define "antenna-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "antenna-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "antenna-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "antenna-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: repository@digest when a digest is set, else repository:tag with the
appVersion as default tag.
*/}}
{{- define "antenna-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
"true" when leader election is on: asked for, or needed because more than one replica runs.
*/}}
{{- define "antenna-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "antenna-operator.leaseName" -}}
{{- default (printf "%s-leader" (include "antenna-operator.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}


{{/*
Rules on CaptureJobs, their Pods and Events, in every watched namespace (a ClusterRole
when all namespaces are watched, a Role in the watched namespace otherwise): exactly the
calls the code makes. docs/chart.md has the same table; tests/chart.rs checks that the
rendered rules are these.
*/}}
{{- define "antenna-operator.jobRules" -}}
# CaptureJobs. list/watch: the watch cache (reflector) shared by the controller and the
# facade, and the start-up check that the CRD is served. create: facade POST
# /api/v2/jobs/ (after TokenReview + SubjectAccessReview of the caller). patch: the
# controller labels kubectl-made jobs with their id; the facade's PUT/PATCH, run, retry
# and cancel (merge patches of the spec). delete: facade DELETE and the controller's
# ttlSecondsAfterFinished cleanup.
- apiGroups: ["antenna.insectai.org"]
  resources: ["capturejobs"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# CaptureJob status: the controller replaces it (guarded by resourceVersion) when it
# changed.
- apiGroups: ["antenna.insectai.org"]
  resources: ["capturejobs/status"]
  verbs: ["update"]
# Batch Pods. list/watch: the controller's Pod cache (label app.kubernetes.io/managed-by).
# create: one Pod per batch per try. delete: cancel and retries (propagation policy
# Background).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
# Events on CaptureJobs for their transitions (kube-runtime's Recorder: create an Event,
# patch its series count when it repeats).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
